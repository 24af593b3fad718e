// The HTML QC report in a real browser: headless Chromium loads a report, a probe script
// injected into a copy of it (ahead of the report's own Content-Security-Policy, which
// forbids scripts) counts the images that decoded and collects errors, CSP violations and
// console errors; Chromium's own console log must stay empty. Screenshots at a laptop's
// window size (and of the whole page) are kept in <build>/report_browser/ to look at.
#include <gtest/gtest.h>
#include <png.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "clients.h"
#include "isoprompt/log.h"
#include "isoprompt/report.h"
#include "report_fixture.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace isoprompt;

namespace {

// Runs before the page's CSP meta (a meta policy covers only what follows it). After
// `load` it writes "ISO-PROBE images=N decoded=M errors=[...]" into the DOM for --dump-dom.
const char* kProbe = R"(<script>
window.__iso_errors = [];
addEventListener("error", e => __iso_errors.push("error: " + (e.message || (e.target && e.target.tagName))), true);
document.addEventListener("securitypolicyviolation", e => __iso_errors.push("csp: " + e.violatedDirective + " " + e.blockedURI));
for (const level of ["error", "warn"]) {
  const original = console[level].bind(console);
  console[level] = (...args) => { __iso_errors.push("console." + level + ": " + args.join(" ")); original(...args); };
}
addEventListener("load", () => {
  const images = [...document.images];
  const decoded = images.filter(i => i.complete && i.naturalWidth > 0).length;
  const out = document.createElement("pre");
  out.textContent = "ISO-PROBE images=" + images.length + " decoded=" + decoded + " errors=" + JSON.stringify(__iso_errors);
  document.body.appendChild(out);
});
</script>)";

std::string artifacts_dir() {
  const fs::path dir = fs::path(ISO_BINARY).parent_path() / "report_browser";
  fs::create_directories(dir);
  return dir.string();
}

bool png_size(const std::string& path, uint32_t& w, uint32_t& h) {
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path.c_str())) return false;
  w = img.width;
  h = img.height;
  png_image_free(&img);
  return true;
}

int count_console_lines(const std::string& log) {
  int n = 0;
  for (size_t at = log.find(":CONSOLE"); at != std::string::npos; at = log.find(":CONSOLE", at + 1)) ++n;
  return n;
}

}  // namespace

// Every image decodes, nothing errs, nothing is blocked, and the screenshots are written.
TEST(ReportBrowser, RendersInHeadlessChromium) {
  ISO_REQUIRE_CLIENT(test::chromium_missing());
  set_log_level(LogLevel::Error);
  const test::ReportFixture f;
  const std::string dir = artifacts_dir();
  const std::string report = dir + "/report.html";
  write_report(report, f.inputs);
  set_log_level(LogLevel::Info);

  std::string html = test::read_text(report);
  const size_t head = html.find("<head>");
  ASSERT_NE(head, std::string::npos);
  html.insert(head + 6, kProbe);
  const std::string probed = dir + "/report.probed.html";
  std::ofstream(probed) << html;

  const test::CliResult r = test::run_chromium(
      {"--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", "file://" + probed}, 120);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Only the probe's line, appended to the body (libstdc++'s regex recurses per character:
  // no searching 80 kB of base64).
  const size_t at = r.out.rfind("ISO-PROBE images=");  // the last: the script itself spells it too
  ASSERT_NE(at, std::string::npos) << "the probe did not run; stderr:\n" << r.err;
  const std::string line = r.out.substr(at, r.out.find("</pre>", at) - at);
  std::smatch m;
  ASSERT_TRUE(std::regex_match(line, m, std::regex("ISO-PROBE images=(\\d+) decoded=(\\d+) errors=(.*)"))) << line;
  EXPECT_EQ(m[1].str(), "12");  // input, restored, ground truth, map: XY, XZ, YZ each
  EXPECT_EQ(m[2].str(), m[1].str()) << "images that did not decode";
  EXPECT_EQ(m[3].str(), "[]");
  EXPECT_EQ(count_console_lines(r.err), 0) << r.err;

  // What a laptop shows first, and the whole page.
  const std::string laptop = dir + "/report_1280x900.png", full = dir + "/report_full.png";
  for (const auto& [shot, size] : {std::pair<std::string, std::string>{laptop, "1280,900"}, {full, "1280,3400"}}) {
    fs::remove(shot);
    const test::CliResult s = test::run_chromium(
        {"--hide-scrollbars", "--window-size=" + size, "--screenshot=" + shot, "file://" + report}, 120);
    ASSERT_EQ(s.exit_code, 0) << s.err;
    uint32_t w = 0, h = 0;
    ASSERT_TRUE(png_size(shot, w, h)) << shot;
    EXPECT_EQ(w, 1280u);
  }
  std::printf("report and screenshots in %s\n", dir.c_str());
}
