#include <unistd.h>

#include <gtest/gtest.h>

#include "isoprompt/fileutil.h"
#include "isoprompt/log.h"
#include "isoprompt/progress.h"
#include "isoprompt/tensor.h"
#include "isoprompt/volume.h"
#include "test_util.h"

using namespace isoprompt;

TEST(Volume, ShapeDtypeAndVoxelSize) {
  Volume v({3, 4, 5}, DType::U16, {0.5, 0.1, 0.1}, "micron");
  EXPECT_EQ(v.numel(), 60);
  EXPECT_EQ(v.size_bytes(), 120u);
  EXPECT_DOUBLE_EQ(v.voxel_size().anisotropy(), 5.0);
  EXPECT_THROW(v.data<float>(), Error);
  v.at<uint16_t>(2, 3, 4) = 7;
  EXPECT_EQ(v.data<uint16_t>()[59], 7);
}

TEST(Volume, PlaneViewsIndexTheSameVoxels) {
  Volume v({3, 4, 5}, DType::F32);
  for (int64_t i = 0; i < v.numel(); ++i) v.data<float>()[i] = float(i);
  auto xz = v.xz<float>(2);  // rows z, cols x at y=2
  EXPECT_EQ(xz.rows, 3);
  EXPECT_EQ(xz.cols, 5);
  EXPECT_EQ(xz(1, 3), v.at<float>(1, 2, 3));
  auto yz = v.yz<float>(4);  // rows z, cols y at x=4
  EXPECT_EQ(yz.rows, 3);
  EXPECT_EQ(yz.cols, 4);
  EXPECT_EQ(yz(2, 1), v.at<float>(2, 1, 4));
  auto xy = v.xy<float>(1);
  EXPECT_EQ(xy(3, 2), v.at<float>(1, 3, 2));
  EXPECT_EQ(v.plane_count(Plane::YZ), 5);
}

TEST(Volume, CopyIsShallowCloneIsDeep) {
  Volume a({1, 1, 2}, DType::U8);
  Volume b = a;
  Volume c = a.clone();
  a.data<uint8_t>()[0] = 9;
  EXPECT_EQ(b.data<uint8_t>()[0], 9);
  EXPECT_EQ(c.data<uint8_t>()[0], 0);
}

TEST(Volume, AstypeRoundsAndSaturates) {
  Volume f({1, 1, 4}, DType::F32, {2, 1, 1});
  float* p = f.data<float>();
  p[0] = -3.f; p[1] = 2.5f; p[2] = 70000.f; p[3] = 3.49f;
  Volume u = f.astype(DType::U16);
  EXPECT_EQ(u.data<uint16_t>()[0], 0);
  EXPECT_EQ(u.data<uint16_t>()[1], 2);  // round half to even
  EXPECT_EQ(u.data<uint16_t>()[2], 65535);
  EXPECT_EQ(u.data<uint16_t>()[3], 3);
  EXPECT_EQ(u.voxel_size(), f.voxel_size());
}

TEST(Volume, TensorRoundTripKeepsMetadataAndSharesFloat) {
  Volume v({2, 3, 4}, DType::F32, {0.3, 0.1, 0.1}, "micron");
  v.at<float>(1, 2, 3) = 5.f;
  VolumeTensor t = to_tensor(v);
  EXPECT_EQ(t.data.sizes(), (std::vector<int64_t>{2, 3, 4}));
  t.data[0][0][0] = 2.f;  // shared, no copy
  EXPECT_EQ(v.at<float>(0, 0, 0), 2.f);
  Volume back = to_volume(t);
  EXPECT_EQ(back.voxel_size(), v.voxel_size());
  EXPECT_EQ(back.at<float>(1, 2, 3), 5.f);

  Volume u({1, 2, 2}, DType::U16, {1, 2, 3});
  u.at<uint16_t>(0, 1, 1) = 60000;
  VolumeTensor tu = to_tensor(u);
  EXPECT_EQ(tu.data.scalar_type(), at::kInt);
  Volume ub = to_volume(tu);
  EXPECT_EQ(ub.dtype(), DType::U16);
  EXPECT_EQ(ub.at<uint16_t>(0, 1, 1), 60000);
  EXPECT_EQ(ub.voxel_size(), (VoxelSize{1, 2, 3}));
}

TEST(Volume, LargeIndicesAre64Bit) {
  // Indexing arithmetic must not overflow past 2^31 (no allocation needed to check).
  Shape3 s{4096, 1024, 1024};
  EXPECT_EQ(s.numel(), int64_t(4096) * 1024 * 1024);
  EXPECT_GT(s.numel(), int64_t(1) << 31);
}

TEST(FileUtil, OutputPathChecks) {
  test::TempDir dir;
  try {
    check_output_path(dir.file("missing/out.tif"));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("output directory does not exist"), std::string::npos);
  }
  const std::string in = dir.file("in.tif");
  { std::FILE* f = std::fopen(in.c_str(), "w"); std::fputs("x", f); std::fclose(f); }
  EXPECT_THROW(check_output_path(in, {in}), InputError);
  EXPECT_NO_THROW(check_output_path(dir.file("out.tif"), {in}));
  EXPECT_EQ(lowercase_extension("/a/b.OME.TIF"), ".ome.tif");
  EXPECT_EQ(lowercase_extension("x.safetensors"), ".safetensors");
}

TEST(FileUtil, AtomicOutputLeavesNothingUnlessCommitted) {
  test::TempDir dir;
  const std::string out = dir.file("o.txt");
  {
    AtomicOutput a(out);
    std::FILE* f = std::fopen(a.temp_path().c_str(), "w");
    std::fputs("partial", f);
    std::fclose(f);
  }
  EXPECT_FALSE(file_exists(out));
  {
    AtomicOutput a(out);
    std::FILE* f = std::fopen(a.temp_path().c_str(), "w");
    std::fputs("done", f);
    std::fclose(f);
    a.commit();
  }
  EXPECT_EQ(test::read_text(out), "done");
}

TEST(Progress, ResumedWorkCountsOnTheBarButNotInTheRate) {
  if (isatty(STDERR_FILENO)) GTEST_SKIP() << "draws a bar on a terminal instead of log lines";
  std::vector<std::string> lines;
  set_log_sink([&](LogLevel, const std::string& m) { lines.push_back(m); });
  {
    Progress bar("pretraining", 100, "steps", 40);
    bar.finish();
  }
  set_log_sink(nullptr);
  ASSERT_EQ(lines.size(), 2u);
  // 40 steps were done by an earlier run: none of them in this run's first instant.
  EXPECT_EQ(lines[0].rfind("pretraining: 40/100 steps, 0.0 steps/s,", 0), 0u) << lines[0];
  EXPECT_EQ(lines[1].rfind("pretraining: 100/100 steps,", 0), 0u) << lines[1];
}

TEST(Progress, FormatsDurations) {
  EXPECT_EQ(Progress::format_duration(62), "1:02");
  EXPECT_EQ(Progress::format_duration(3723), "1:02:03");
  EXPECT_EQ(Progress::format_duration(-1), "--:--");
}

// What the SIGTERM handler does: an unfinished temporary output is unlinked; a committed
// or destroyed one is no longer pending.
TEST(AtomicOutput, PendingTemporariesAreRemovedOnTermination) {
  test::TempDir dir;
  AtomicOutput a(dir.file("a.tif"));
  {
    std::FILE* f = std::fopen(a.temp_path().c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  AtomicOutput b(dir.file("b.tif"));
  {
    std::FILE* f = std::fopen(b.temp_path().c_str(), "wb");
    ASSERT_NE(f, nullptr);
    std::fclose(f);
  }
  b.commit();
  remove_pending_temporaries();
  EXPECT_FALSE(file_exists(a.temp_path()));
  EXPECT_TRUE(file_exists(dir.file("b.tif")));
}
