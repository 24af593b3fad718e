// CLI: `isoprompt report` (the QC report of files on disk): a report from a baseline's
// output, the factor from the calibration, and the refusals (exit 2, one message, no file).
#include <gtest/gtest.h>

#include <cmath>

#include "isoprompt/io.h"
#include "isoprompt/ops.h"
#include "test_util.h"

using namespace isoprompt;
using isoprompt::test::error_line;
using isoprompt::test::files_in;
using isoprompt::test::read_text;
using isoprompt::test::run_cli;
using isoprompt::test::TempDir;

namespace {

// An anisotropic uint16 stack, voxel 0.4 x 0.1 x 0.1 um.
Volume stack(Shape3 s) {
  Volume v(s, DType::U16, {0.4, 0.1, 0.1});
  for (int64_t z = 0; z < s.z; ++z)
    for (int64_t y = 0; y < s.y; ++y)
      for (int64_t x = 0; x < s.x; ++x)
        v.at<uint16_t>(z, y, x) = uint16_t(1000 + 700 * std::sin(0.9 * z + 0.2 * y) * std::cos(0.15 * x));
  return v;
}

}  // namespace

// baseline -> report: exit 0, a page with the sections, the factor 4 from the two files'
// z steps, and the self-consistency line on stdout.
TEST(ReportCli, ReportsOnBaselineOutput) {
  TempDir t;
  write_volume(t.file("lo.tif"), stack({8, 24, 20}));
  auto r = run_cli({"baseline", t.file("lo.tif"), "-o", t.file("up.tif"), "--method", "linear"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = run_cli({"report", t.file("lo.tif"), t.file("up.tif"), "--interp", "linear", "-o", t.file("r.html")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("self-consistency PSNR(re-degraded, input): restored"), std::string::npos) << r.out;
  const std::string html = read_text(t.file("r.html"));
  EXPECT_NE(html.find("id=\"consistency\""), std::string::npos);
  EXPECT_NE(html.find("4 (from z steps of the two files)"), std::string::npos);
  EXPECT_NE(html.find("linear (from --interp)"), std::string::npos);
  EXPECT_EQ(files_in(t.path()), (std::vector<std::string>{"lo.tif", "r.html", "up.tif"}));
}

// A missing input: exit 2, one error naming it, no report.
TEST(ReportCli, MissingFileExitsTwo) {
  TempDir t;
  write_volume(t.file("lo.tif"), stack({8, 24, 20}));
  const auto r = run_cli({"report", t.file("lo.tif"), t.file("nope.tif"), "-o", t.file("r.html")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(error_line(r.err).find(t.file("nope.tif")), std::string::npos) << r.err;
  EXPECT_NE(error_line(r.err).find("restored volume"), std::string::npos) << r.err;
  EXPECT_EQ(files_in(t.path()), std::vector<std::string>{"lo.tif"});
}

// -o naming an input would clobber it: refused before anything is read, input intact.
TEST(ReportCli, OutputEqualToAnInputExitsTwo) {
  TempDir t;
  write_volume(t.file("lo.tif"), stack({8, 24, 20}));
  const std::string before = read_text(t.file("lo.tif"));
  auto r = run_cli({"baseline", t.file("lo.tif"), "-o", t.file("up.tif")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const std::string& victim : {t.file("lo.tif"), t.file("up.tif")}) {
    r = run_cli({"report", t.file("lo.tif"), t.file("up.tif"), "-o", victim});
    EXPECT_EQ(r.exit_code, 2) << victim;
    EXPECT_NE(error_line(r.err).find(victim), std::string::npos) << r.err;
  }
  EXPECT_EQ(read_text(t.file("lo.tif")), before);
  EXPECT_EQ(files_in(t.path()), (std::vector<std::string>{"lo.tif", "up.tif"}));
}

// A restored volume of another y/x size, or a factor that does not match the plane counts:
// exit 2 with the shapes, no report.
TEST(ReportCli, VolumesThatDoNotFitExitTwo) {
  TempDir t;
  write_volume(t.file("lo.tif"), stack({8, 24, 20}));
  write_volume(t.file("other.tif"), stack({32, 24, 21}));
  auto r = run_cli({"report", t.file("lo.tif"), t.file("other.tif"), "--factor", "4", "-o", t.file("r.html")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(error_line(r.err).find("32x24x21"), std::string::npos) << r.err;
  write_volume(t.file("up.tif"), stack({32, 24, 20}));
  r = run_cli({"report", t.file("lo.tif"), t.file("up.tif"), "--factor", "2", "-o", t.file("r.html")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(error_line(r.err).find("is the factor right?"), std::string::npos) << r.err;
  EXPECT_EQ(files_in(t.path()), (std::vector<std::string>{"lo.tif", "other.tif", "up.tif"}));
}
