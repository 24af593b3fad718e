// QC report (src/infer/report.cpp): the self-consistency numbers on constructed cases with
// known answers, the sections and embedded images of the HTML, finite numbers only, and
// the refusals of volumes that do not fit together.
#include "isoprompt/report.h"

#include <gtest/gtest.h>
#include <png.h>

#include <cmath>
#include <regex>
#include <string>
#include <vector>

#include "isoprompt/error.h"
#include "isoprompt/log.h"
#include "isoprompt/ops.h"
#include "isoprompt/phantom.h"
#include "report_fixture.h"
#include "test_util.h"

using namespace isoprompt;

namespace {

struct Quiet {
  Quiet() { set_log_level(LogLevel::Error); }
  ~Quiet() { set_log_level(LogLevel::Info); }
};

// Input of 2 planes (all 0, all 1) and a 4-plane output whose planes are 0, 0.2, 1, 1: the
// re-degraded output (pairs averaged) is 0.1, 1, so MSE = 0.1^2 / 2 = 0.005 in [0, 1] units.
struct TwoPlaneCase {
  Volume input{{2, 4, 4}, DType::F32, {2.0, 1.0, 1.0}};
  Volume output{{4, 4, 4}, DType::F32, {1.0, 1.0, 1.0}};
  TwoPlaneCase() {
    const float in_planes[2] = {0.f, 1.f}, out_planes[4] = {0.f, 0.2f, 1.f, 1.f};
    for (int64_t y = 0; y < 4; ++y)
      for (int64_t x = 0; x < 4; ++x) {
        for (int64_t z = 0; z < 2; ++z) input.at<float>(z, y, x) = in_planes[z];
        for (int64_t z = 0; z < 4; ++z) output.at<float>(z, y, x) = out_planes[z];
      }
  }
};

ReportInputs minimal(const Volume& input, const Volume& output, double factor, Interp interp) {
  ReportInputs in;
  in.title = "case";
  in.input = &input;
  in.output = &output;
  in.factor = factor;
  in.interp = interp;
  return in;
}

std::vector<uint8_t> base64_decode(const std::string& s) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<uint8_t> out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : s) {
    if (c == '=') break;
    const int v = value(c);
    EXPECT_GE(v, 0) << "not base64: '" << c << "'";
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t((acc >> bits) & 0xff));
    }
  }
  return out;
}

struct DecodedPng {
  bool ok = false;
  uint32_t width = 0, height = 0;
  bool colour = false;
  std::string message;
};

// Decodes fully with libpng (not only the header), so a corrupt stream fails here.
DecodedPng decode_png(const std::vector<uint8_t>& bytes) {
  DecodedPng d;
  png_image img{};
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, bytes.data(), bytes.size())) {
    d.message = img.message;
    return d;
  }
  d.width = img.width;
  d.height = img.height;
  d.colour = (img.format & PNG_FORMAT_FLAG_COLOR) != 0;
  std::vector<uint8_t> px(PNG_IMAGE_SIZE(img));
  d.ok = png_image_finish_read(&img, nullptr, px.data(), 0, nullptr) != 0;
  if (!d.ok) d.message = img.message;
  return d;
}

std::vector<std::string> embedded_pngs(const std::string& html) {
  std::vector<std::string> out;
  const std::string prefix = "data:image/png;base64,";
  for (size_t at = html.find(prefix); at != std::string::npos; at = html.find(prefix, at)) {
    at += prefix.size();
    out.push_back(html.substr(at, html.find('"', at) - at));
  }
  return out;
}

// The page's text without the image payloads (base64 can spell "+nan/" by chance). By hand:
// libstdc++'s regex recurses once per character and overflows the stack on long payloads.
std::string text_of(const std::string& html) {
  std::string out;
  const std::string prefix = "base64,";
  size_t from = 0;
  for (size_t at = html.find(prefix); at != std::string::npos; at = html.find(prefix, from)) {
    out.append(html, from, at + prefix.size() - from);
    from = html.find('"', at);
  }
  return out + html.substr(from);
}

bool has_non_finite_text(const std::string& html) {
  return std::regex_search(text_of(html), std::regex("\\b(nan|inf|infinity)\\b", std::regex::icase));
}

}  // namespace

// RFC 4648's test vectors.
TEST(Report, Base64MatchesRfc4648) {
  auto enc = [](const std::string& s) { return base64_encode(std::vector<uint8_t>(s.begin(), s.end())); };
  EXPECT_EQ(enc(""), "");
  EXPECT_EQ(enc("f"), "Zg==");
  EXPECT_EQ(enc("fo"), "Zm8=");
  EXPECT_EQ(enc("foo"), "Zm9v");
  EXPECT_EQ(enc("foob"), "Zm9vYg==");
  EXPECT_EQ(enc("fooba"), "Zm9vYmE=");
  EXPECT_EQ(enc("foobar"), "Zm9vYmFy");
}

// PSNR(re-degraded, input) on the two-plane case: 10 log10(1 / 0.005) dB.
TEST(Report, RedegradedPsnrKnownValue) {
  const TwoPlaneCase c;
  DegradeParams p;
  p.factor = 2;
  EXPECT_NEAR(redegraded_psnr(c.input, c.output, p, Normalizer{0.0, 1.0}), 10.0 * std::log10(200.0), 1e-5);
  // The range is applied before the PSNR: [0, 2] -> [0, 1] halves the error, +6.02 dB.
  EXPECT_NEAR(redegraded_psnr(c.input, c.output, p, Normalizer{0.0, 2.0}), 10.0 * std::log10(800.0), 1e-5);
  // An output that re-degrades to the input exactly scores +inf.
  Volume exact = c.output.clone();
  for (int64_t y = 0; y < 4; ++y)
    for (int64_t x = 0; x < 4; ++x) exact.at<float>(1, y, x) = 0.f;
  EXPECT_EQ(redegraded_psnr(c.input, exact, p, Normalizer{0.0, 1.0}), INFINITY);
}

// The same value through compute_report_metrics, which takes the input's 0.1 / 99.9
// percentiles (here exactly 0 and 1) as the range; nearest interpolation re-degrades to
// the input exactly for an integer factor, so its baseline is +inf.
TEST(Report, MetricsOfTwoPlaneCase) {
  Quiet q;
  const TwoPlaneCase c;
  const ReportMetrics m = compute_report_metrics(minimal(c.input, c.output, 2.0, Interp::Nearest));
  EXPECT_DOUBLE_EQ(m.self.range.lo, 0.0);
  EXPECT_DOUBLE_EQ(m.self.range.hi, 1.0);
  EXPECT_NEAR(m.self.output_psnr, 10.0 * std::log10(200.0), 1e-5);
  EXPECT_EQ(m.self.interp_psnr, INFINITY);
  EXPECT_EQ(m.self.planes_compared, 2);
  // Nearest gives planes 0, 0, 1, 1: the output differs by 0.2 in one plane of four.
  EXPECT_NEAR(m.self.output_vs_interp_psnr, 10.0 * std::log10(1.0 / (0.04 / 4)), 1e-4);
  EXPECT_FALSE(m.gt.available);
}

// A z-constant stack: every interpolation is constant along z, so both the interpolation
// and an output equal to it re-degrade to the input exactly; the page shows infinity as a
// symbol, never "inf" or "nan".
TEST(Report, ZConstantStackIsExactlyConsistent) {
  Quiet q;
  Volume input({3, 6, 5}, DType::U16, {4.0, 1.0, 1.0});
  for (int64_t z = 0; z < 3; ++z)
    for (int64_t y = 0; y < 6; ++y)
      for (int64_t x = 0; x < 5; ++x) input.at<uint16_t>(z, y, x) = uint16_t(100 + 10 * y + x);
  const Volume output = upsample(input, 0, 4.0, Interp::Linear);
  ASSERT_EQ(output.nz(), 12);
  ReportMetrics m;
  const std::string html = render_report_html(minimal(input, output, 4.0, Interp::Linear), &m);
  EXPECT_EQ(m.self.output_psnr, INFINITY);
  EXPECT_EQ(m.self.interp_psnr, INFINITY);
  EXPECT_EQ(m.self.output_vs_interp_psnr, INFINITY);
  EXPECT_NE(html.find("&infin; (identical)"), std::string::npos);
  EXPECT_FALSE(has_non_finite_text(html));
}

// Every section is there, the 12 images (4 rows x XY, XZ, YZ) decode as PNGs of the
// volumes' section sizes, the map in colour, and no number is NaN or Inf.
TEST(Report, HtmlHasEverySectionAndDecodableImages) {
  Quiet q;
  const test::ReportFixture f({32, 40, 48});
  ReportMetrics m;
  const std::string html = render_report_html(f.inputs, &m);
  for (const char* id : {"id=\"consistency\"", "id=\"views\"", "id=\"profiles\"", "id=\"tuning\"", "id=\"details\""})
    EXPECT_NE(html.find(id), std::string::npos) << id;
  for (const char* text : {"Against the ground truth", "XZ vs YZ", "phantom_x4.iso.tif", "reconstruction",
                           "0.4 &times; 0.1 &times; 0.1 micron", "0.1 &times; 0.1 &times; 0.1 micron"})
    EXPECT_NE(html.find(text), std::string::npos) << text;
  // Profiles, validation curve, loss curve, colour bar.
  int svgs = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1)) ++svgs;
  EXPECT_EQ(svgs, 4);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("http://"), html.find("http://www.w3.org/2000/svg"));  // only the SVG namespace
  EXPECT_EQ(html.find("https://"), std::string::npos);

  const std::vector<std::string> images = embedded_pngs(html);
  ASSERT_EQ(images.size(), 12u);
  const Shape3 s = f.output.shape();  // 32 x 40 x 48; ground truth the same here
  const uint32_t want_w[3] = {uint32_t(s.x), uint32_t(s.x), uint32_t(s.y)};
  const uint32_t want_h[3] = {uint32_t(s.y), uint32_t(s.z), uint32_t(s.z)};
  for (size_t i = 0; i < images.size(); ++i) {
    const DecodedPng d = decode_png(base64_decode(images[i]));
    ASSERT_TRUE(d.ok) << "image " << i << ": " << d.message;
    EXPECT_EQ(d.width, want_w[i % 3]) << "image " << i;
    EXPECT_EQ(d.height, want_h[i % 3]) << "image " << i;
    EXPECT_EQ(d.colour, i >= 9) << "image " << i << " (only the uncertainty row is in colour)";
  }
  EXPECT_FALSE(has_non_finite_text(html));
  for (double v : {m.self.output_psnr, m.self.interp_psnr, m.self.output_vs_interp_psnr, m.self.xz_yz_psnr,
                   m.self.uncertainty_mean, m.gt.output_psnr, m.gt.interp_psnr, m.gt.output_ssim, m.gt.interp_ssim})
    EXPECT_TRUE(std::isfinite(v)) << v;
  // The fixture's output is 70 % ground truth: closer to it than the interpolation, and more
  // consistent with the input.
  EXPECT_GT(m.gt.output_psnr, m.gt.interp_psnr);
  EXPECT_GT(m.self.output_psnr, m.self.interp_psnr);
}

// With 2 restorations per voxel the map is |xz - yz| / 2, so a map of constant u on an
// output whose display range is R gives the XZ-vs-YZ PSNR 10 log10(R^2 / (2u)^2).
TEST(Report, XzYzAgreementFromTwoPassMap) {
  Quiet q;
  const TwoPlaneCase c;
  Volume map = c.output.like(DType::F32);
  for (int64_t i = 0; i < map.numel(); ++i) map.data<float>()[i] = 0.05f;
  ReportInputs in = minimal(c.input, c.output, 2.0, Interp::Linear);
  in.uncertainty = &map;
  const ReportMetrics m = compute_report_metrics(in);
  const double range = m.display_hi - m.display_lo;
  EXPECT_NEAR(m.self.xz_yz_psnr, 10.0 * std::log10(range * range / (0.1 * 0.1)), 1e-4);
  EXPECT_NEAR(m.self.uncertainty_mean, 0.05, 1e-7);
  in.uncertainty_restorations = 8;  // with TTA the map mixes flips: no XZ-vs-YZ figure
  EXPECT_TRUE(std::isnan(compute_report_metrics(in).self.xz_yz_psnr));
}

// Large planes are binned to at most 1024 px, and the caption says by how much.
TEST(Report, LargePanelsAreBinned) {
  Quiet q;
  Volume input({2, 6, 2100}, DType::F32, {2.0, 1.0, 1.0});
  for (int64_t i = 0; i < input.numel(); ++i) input.data<float>()[i] = float(i % 97);
  const Volume output = upsample(input, 0, 2.0, Interp::Linear);
  const std::string html = render_report_html(minimal(input, output, 2.0, Interp::Linear));
  const std::vector<std::string> images = embedded_pngs(html);
  ASSERT_EQ(images.size(), 6u);
  const DecodedPng xy = decode_png(base64_decode(images[0]));
  ASSERT_TRUE(xy.ok) << xy.message;
  EXPECT_EQ(xy.width, 700u);  // ceil(2100 / 3)
  EXPECT_EQ(xy.height, 2u);   // ceil(6 / 3)
  EXPECT_NE(html.find("binned 3&times;3"), std::string::npos);
}

// Volumes that do not fit together are refused with the shapes in the message.
TEST(Report, RefusesMismatchedVolumes) {
  Quiet q;
  const TwoPlaneCase c;
  const Volume narrow({4, 4, 3}, DType::F32);
  EXPECT_THROW(compute_report_metrics(minimal(c.input, narrow, 2.0, Interp::Linear)), InputError);
  const Volume too_deep({9, 4, 4}, DType::F32);
  try {
    compute_report_metrics(minimal(c.input, too_deep, 2.0, Interp::Linear));
    ADD_FAILURE() << "no throw";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("9 planes"), std::string::npos) << e.what();
  }
  const Volume map({4, 4, 5}, DType::F32);
  ReportInputs in = minimal(c.input, c.output, 2.0, Interp::Linear);
  in.uncertainty = &map;
  EXPECT_THROW(compute_report_metrics(in), InputError);
  EXPECT_THROW(compute_report_metrics(minimal(c.input, c.output, 0.5, Interp::Linear)), InputError);
  ReportInputs none;
  EXPECT_THROW(compute_report_metrics(none), InputError);
}

// write_report writes exactly what render_report_html returns (it has no clock in it), and
// leaves nothing behind when the folder is missing.
TEST(Report, WriteReportIsTheRenderedPage) {
  Quiet q;
  const TwoPlaneCase c;
  const ReportInputs in = minimal(c.input, c.output, 2.0, Interp::Linear);
  test::TempDir dir;
  write_report(dir.file("r.html"), in);
  EXPECT_EQ(test::read_text(dir.file("r.html")), render_report_html(in));
  EXPECT_THROW(write_report(dir.file("missing/r.html"), in), InputError);
  EXPECT_EQ(test::files_in(dir.path()), std::vector<std::string>{"r.html"});
}

namespace {

// A smooth isotropic volume (linear in y and x, a slow wave along z) and its 4x box-degraded
// stack with white Gaussian noise of `sigma` added.
struct NoisyStack {
  Volume gt{{64, 40, 40}, DType::F32, {0.1, 0.1, 0.1}};
  Volume input;
  explicit NoisyStack(double sigma) {
    for (int64_t z = 0; z < gt.nz(); ++z)
      for (int64_t y = 0; y < gt.ny(); ++y)
        for (int64_t x = 0; x < gt.nx(); ++x)
          gt.at<float>(z, y, x) = float(0.5 + 0.2 * std::sin(0.15 * z) + 0.002 * y + 0.001 * x);
    DegradeParams p;
    p.factor = 4;
    input = degrade(gt, 0, p);
    SplitMix rng(17);
    for (int64_t i = 0; i < input.numel(); ++i) input.data<float>()[i] += float(sigma * rng.normal());
  }
};

}  // namespace

// Immerkaer's estimator recovers white Gaussian noise on a locally linear image, and gives
// (nearly) 0 without noise.
TEST(Report, NoiseEstimateOnLinearImage) {
  Volume ramp({4, 64, 64}, DType::F32);
  for (int64_t z = 0; z < 4; ++z)
    for (int64_t y = 0; y < 64; ++y)
      for (int64_t x = 0; x < 64; ++x) ramp.at<float>(z, y, x) = float(0.2 + 0.004 * y + 0.005 * x);
  EXPECT_LT(estimate_noise_sigma(ramp, Normalizer{0.0, 1.0}), 1e-6);
  SplitMix rng(5);
  Volume noisy = ramp.clone();
  for (int64_t i = 0; i < noisy.numel(); ++i) noisy.data<float>()[i] += float(0.02 * rng.normal());
  EXPECT_NEAR(estimate_noise_sigma(noisy, Normalizer{0.0, 1.0}), 0.02, 0.001);
  EXPECT_NEAR(estimate_noise_sigma(noisy, Normalizer{0.0, 2.0}), 0.01, 0.0005);  // on the range's scale
  EXPECT_EQ(estimate_noise_sigma(Volume({3, 2, 9}, DType::F32), Normalizer{0.0, 1.0}), 0.0);
}

// On a noisy stack the ground truth itself (a perfect, noise-free restoration) re-degrades
// to the input minus its noise: it scores at the noise floor, below the interpolation (which
// keeps the noise), and the page says that this is what denoising gives, not a failure.
TEST(Report, PerfectRestorationOfNoisyStackIsNotFlagged) {
  Quiet q;
  const NoisyStack n(0.02);
  ReportInputs in = minimal(n.input, n.gt, 4.0, Interp::BSpline3);
  ReportMetrics m;
  const std::string html = render_report_html(in, &m);
  EXPECT_LT(m.self.output_psnr, m.self.interp_psnr);
  EXPECT_NEAR(m.self.output_psnr, m.self.noise_floor_psnr, 0.5);
  EXPECT_NE(html.find("class=\"verdict noisy\""), std::string::npos);
  // Invented z structure is flagged: a +-0.1 square wave of period 8 planes, aligned with the
  // 4-plane blocks, so the box average keeps all of it.
  Volume ripple = n.gt.clone();
  for (int64_t z = 0; z < ripple.nz(); ++z)
    for (int64_t i = 0; i < ripple.ny() * ripple.nx(); ++i)
      ripple.data<float>()[z * ripple.ny() * ripple.nx() + i] += (z % 8 < 4 ? 0.1f : -0.1f);
  in.output = &ripple;
  const std::string bad = render_report_html(in, &m);
  EXPECT_LT(m.self.output_psnr, m.self.noise_floor_psnr - 3);
  EXPECT_NE(bad.find("class=\"verdict worse\""), std::string::npos);
}
