// The streaming restore (src/pipeline/stream.h): under a memory budget far below what the
// job needs in memory, restore/predict read the input box by box, reconstruct slab by slab
// through a scratch directory and write the output chunk by chunk, and give the same output
// as the in-memory job. A run that stops half-way leaves no output, and a rerun continues
// from its scratch directory to the same result.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sys/wait.h>

#include <chrono>
#include <cstdlib>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/model.h"
#include "isoprompt/pipeline.h"
#include "isoprompt/ranks.h"
#include "isoprompt/runtime.h"
#include "isoprompt/zarr.h"
#include "pipeline/stream.h"
#include "test_util.h"
#include "tiny_models.h"

using namespace isoprompt;
namespace fs = std::filesystem;

namespace {

// A random tiny SwinIR: it changes every voxel, so a misplaced plane or a wrong fusion shows.
std::string save_tiny_backbone(const std::string& path) {
  torch::manual_seed(3);
  SwinIR net(test::tiny_swin_config());
  net->eval();
  save_backbone(path, net, {{"input_interp", "keys"}});
  return path;
}

// Smooth structure plus noise, uint16, anisotropic voxel (3, 1, 1); odd sizes, so the last
// slab of every pass is a partial one.
Volume stack(int64_t nz, int64_t ny, int64_t nx) {
  Volume v({nz, ny, nx}, DType::U16, {3.0, 1.0, 1.0}, "micron");
  uint64_t state = 99;
  for (int64_t z = 0; z < nz; ++z)
    for (int64_t y = 0; y < ny; ++y)
      for (int64_t x = 0; x < nx; ++x) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        const double noise = double(state >> 40) / double(1 << 24);
        const double s = 1000 + 800 * std::sin(0.3 * x + 0.2 * y) * std::cos(0.7 * z) + 300 * noise;
        v.data<uint16_t>()[(z * ny + y) * nx + x] = static_cast<uint16_t>(s);
      }
  return v;
}

RestoreJob base_job(const test::TempDir& d, const std::string& backbone) {
  set_threads(1);
  RestoreJob job;
  job.input = d.file("in.tif");
  job.backbone = backbone;
  job.tune = false;
  job.method = Method::ZeroShot;
  // One tile per plane and one tile per forward pass, whatever the budget: the same
  // arithmetic for every plane in both runs.
  job.tile = 64;
  job.batch = 1;
  job.max_memory_gb = 8;
  return job;
}

// restore with a prompt tuned for a few steps on tiny crops, kept whatever its validation
// says (no fallback to the interpolation).
void tune_briefly(RestoreJob& job) {
  job.tune = true;
  job.method = Method::Prompt;
  job.fallback_to_interp = false;
  job.tune_params.steps = 6;
  job.tune_params.batch = 2;
  job.tune_params.eval_every = 3;
  job.tune_params.crop_min = job.tune_params.crop_max = 24;
  job.tune_params.val_crops = 2;
  job.tune_params.cache_crops = 8;
}

void expect_same_voxels(const Volume& a, const Volume& b, const std::string& what) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  EXPECT_EQ(a.voxel_size().z, b.voxel_size().z) << what;
  EXPECT_EQ(a.voxel_size().x, b.voxel_size().x) << what;
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.size_bytes()), 0) << what << ": voxels differ";
}

// 0.5 MB: the job needs ~0.3 GB in memory (the 256 MiB group allowance alone), so it streams,
// in slabs of 2 planes.
constexpr double kTinyBudgetGb = 0.0005;

}  // namespace

// Zero-shot with the uncertainty map, to TIFF (scratch store, then plane by plane) and to
// OME-Zarr (chunk by chunk in place): every voxel equal to the in-memory job's, exactly,
// since each plane goes through the same arithmetic (the same tiles, one per forward pass).
TEST(Stream, ZeroShotUnderATinyBudgetEqualsTheInMemoryJob) {
  test::TempDir d;
  const std::string bb = save_tiny_backbone(d.file("bb.safetensors"));
  write_volume(d.file("in.tif"), stack(7, 37, 29));
  RestoreJob mem = base_job(d, bb);
  mem.output = d.file("mem.tif");
  mem.uncertainty = d.file("mem_u.tif");
  const RestoreOutcome m = run_restore_job(mem);
  EXPECT_FALSE(m.streamed);

  for (const char* ext : {".tif", ".ome.zarr"}) {
    RestoreJob st = mem;
    st.output = d.file(std::string("st") + ext);
    st.uncertainty = d.file(std::string("st_u") + ext);
    st.max_memory_gb = kTinyBudgetGb;
    const RestoreOutcome s = run_restore_job(st);
    EXPECT_TRUE(s.streamed) << ext;
    EXPECT_FALSE(s.resumed) << ext;
    EXPECT_EQ(s.written.shape, m.written.shape) << ext;
    expect_same_voxels(read_volume(st.output), read_volume(mem.output), ext);
    expect_same_voxels(read_volume(st.uncertainty), read_volume(mem.uncertainty), std::string(ext) + " map");
    EXPECT_NEAR(s.uncertainty_mean, m.uncertainty_mean, 1e-6 * m.uncertainty_mean) << ext;
    EXPECT_FLOAT_EQ(s.uncertainty_max, m.uncertainty_max) << ext;
    // The scratch directory (beside the output) is gone, and so is the partial store.
    EXPECT_FALSE(fs::exists(d.file(std::string(".st") + ext + ".scratch"))) << ext;
    EXPECT_FALSE(fs::exists(d.file(std::string(".st") + ext + ".partial"))) << ext;
  }
}

// restore: the prompt tunes on the same planes with the same normalisation (the planes fit
// a quarter of the budget), so tuning, fallback decision and output match.
TEST(Stream, RestoreWithTuningAndTtaEqualsTheInMemoryJob) {
  test::TempDir d;
  const std::string bb = save_tiny_backbone(d.file("bb.safetensors"));
  write_volume(d.file("in.tif"), stack(6, 33, 30));
  RestoreJob mem = base_job(d, bb);
  tune_briefly(mem);
  mem.tta = true;
  mem.output = d.file("mem.tif");
  const RestoreOutcome m = run_restore_job(mem);
  RestoreJob st = mem;
  st.output = d.file("st.ome.zarr");
  st.max_memory_gb = kTinyBudgetGb;
  st.scratch = d.file("scratch");
  fs::create_directory(st.scratch);
  const RestoreOutcome s = run_restore_job(st);
  EXPECT_TRUE(s.streamed);
  EXPECT_EQ(s.info.val_psnr, m.info.val_psnr);
  EXPECT_EQ(s.info.norm.lo, m.info.norm.lo);
  EXPECT_EQ(s.info.norm.hi, m.info.norm.hi);
  expect_same_voxels(read_volume(st.output), read_volume(mem.output), "tuned, tta");
  EXPECT_TRUE(fs::is_empty(st.scratch));  // its job directory was removed
}

// predict on an uncalibrated stack takes the prompt's factor; the memory estimate must count
// the output of that factor (it once took K = 1 and kept a job 8x too large in memory).
TEST(Stream, PredictEstimatesAnUncalibratedStackAtThePromptsFactor) {
  test::TempDir d;
  const std::string bb = save_tiny_backbone(d.file("bb.safetensors"));
  Volume v = stack(6, 40, 36);
  v.set_voxel_size({8.0, 1.0, 1.0});  // K = 8 for tuning
  write_volume(d.file("cal.tif"), v);
  RestoreJob tune = base_job(d, bb);
  tune.input = d.file("cal.tif");
  tune_briefly(tune);
  tune.output = d.file("cal_out.tif");
  tune.prompt_out = d.file("p.safetensors");
  ASSERT_TRUE(run_restore_job(tune).saved_prompt);

  v.set_voxel_size({1.0, 1.0, 1.0});
  v.set_unit("pixel");
  write_volume(d.file("uncal.tif"), v);
  const Shape3 s = v.shape();
  const double at_k1 = stream::in_memory_bytes(s, DType::U16, 1.0, DType::U16, false);
  const double at_k8 = stream::in_memory_bytes(s, DType::U16, 8.0, DType::U16, false);
  RestoreJob job = base_job(d, bb);
  job.input = d.file("uncal.tif");
  job.method = Method::Prompt;
  job.prompt = d.file("p.safetensors");
  job.output = d.file("uncal_out.tif");
  job.max_memory_gb = 0.5 * (at_k1 + at_k8) / (1024.0 * 1024.0 * 1024.0);  // holds K = 1, not K = 8
  const RestoreOutcome out = run_restore_job(job);
  EXPECT_TRUE(out.streamed);
  EXPECT_EQ(out.written.shape.z, 48);
}

// The factor is resolved from the metadata before any voxel is read: an uncalibrated stack
// without --factor fails at once, before a streamed job makes its scratch directory.
TEST(Stream, AMissingFactorFailsBeforeTheScratchDirectoryIsMade) {
  test::TempDir d;
  Volume v = stack(5, 20, 18);
  v.set_voxel_size({1.0, 1.0, 1.0});
  v.set_unit("pixel");
  write_volume(d.file("in.tif"), v);
  RestoreJob job = base_job(d, "");
  job.method = Method::Interp;
  job.backbone.clear();
  job.output = d.file("out.tif");
  job.max_memory_gb = kTinyBudgetGb;
  EXPECT_THAT(test::input_error_of([&] { run_restore_job(job); }),
              testing::HasSubstr("has no voxel-size calibration, so --factor auto cannot work"));
  EXPECT_EQ(test::files_in(d.path()), std::vector<std::string>{"in.tif"});
}

// Interpolation streams in slabs of x and equals ops' upsample exactly (float32 output).
TEST(Stream, InterpolationUnderATinyBudgetEqualsTheInMemoryJob) {
  test::TempDir d;
  write_volume(d.file("in.tif"), stack(9, 21, 40));
  RestoreJob mem = base_job(d, "");
  mem.method = Method::Interp;
  mem.backbone.clear();
  mem.out_dtype = DType::F32;
  mem.output = d.file("mem.tif");
  run_restore_job(mem);
  RestoreJob st = mem;
  st.output = d.file("st.h5");
  st.max_memory_gb = kTinyBudgetGb;
  const RestoreOutcome s = run_restore_job(st);
  EXPECT_TRUE(s.streamed);
  expect_same_voxels(read_volume(st.output), read_volume(mem.output), "interp");
}

// A run that stops after a few forward passes leaves no output under its name and keeps its
// scratch directory; the rerun says it continues, runs only the forward passes still
// missing, and writes what an uninterrupted run writes.
TEST(Stream, AnInterruptedRunLeavesNoOutputAndTheRerunContinuesToTheSameResult) {
  test::TempDir d;
  const std::string bb = save_tiny_backbone(d.file("bb.safetensors"));
  write_volume(d.file("in.tif"), stack(7, 37, 29));
  RestoreJob whole = base_job(d, bb);
  whole.output = d.file("whole.ome.zarr");
  whole.max_memory_gb = kTinyBudgetGb;
  const RestoreOutcome w = run_restore_job(whole);
  ASSERT_TRUE(w.streamed);

  // The interruption: the library's Ctrl-C flag, raised from the progress of the pass.
  RestoreJob job = whole;
  job.output = d.file("out.ome.zarr");
  const std::string scratch = d.file(".out.ome.zarr.scratch");
  std::thread stopper([&] {
    // Once the XZ store holds a chunk, the run is half-way through.
    for (int i = 0; i < 20000 && !fs::exists(scratch + "/xz.partial.zarr/0/0.2.0"); ++i)
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    request_interrupt();
  });
  EXPECT_THROW(run_restore_job(job), Cancelled);
  stopper.join();
  clear_interrupt();
  EXPECT_FALSE(fs::exists(job.output));
  ASSERT_TRUE(fs::exists(scratch + "/job.txt"));
  ASSERT_TRUE(fs::exists(scratch + "/xz.partial.zarr/0/0.0.0"));

  const RestoreOutcome r = run_restore_job(job);
  EXPECT_TRUE(r.streamed);
  EXPECT_TRUE(r.resumed);
  expect_same_voxels(read_volume(job.output), read_volume(whole.output), "resumed");
  EXPECT_FALSE(fs::exists(scratch));

  // Another job (another fusion) with an interrupted scratch directory starts over.
  RestoreJob other = job;
  other.output = d.file("other.ome.zarr");
  fs::create_directories(d.file(".other.ome.zarr.scratch"));
  std::ofstream(d.file(".other.ome.zarr.scratch/job.txt")) << "another job\n";
  const RestoreOutcome o = run_restore_job(other);
  EXPECT_FALSE(o.resumed);
  expect_same_voxels(read_volume(other.output), read_volume(whole.output), "restarted");
}

// A scratch directory that is not isoprompt's is never removed.
TEST(Stream, RefusesAForeignScratchDirectory) {
  test::TempDir d;
  write_volume(d.file("in.tif"), stack(5, 20, 20));
  RestoreJob job = base_job(d, "");
  job.method = Method::Interp;
  job.output = d.file("out.tif");
  job.max_memory_gb = kTinyBudgetGb;
  fs::create_directories(d.file(".out.tif.scratch"));
  std::ofstream(d.file(".out.tif.scratch/precious.txt")) << "mine\n";
  EXPECT_THAT(test::input_error_of([&] { run_restore_job(job); }), testing::HasSubstr("is not isoprompt's"));
  EXPECT_TRUE(fs::exists(d.file(".out.tif.scratch/precious.txt")));
  EXPECT_FALSE(fs::exists(job.output));
  // --report needs the volumes in memory: said before any work.
  RestoreJob rep = job;
  rep.output = d.file("out2.tif");
  rep.report = d.file("r.html");
  EXPECT_THAT(test::input_error_of([&] { run_restore_job(rep); }),
              testing::HasSubstr("--report needs the volumes in memory"));
}

// mpirun -np 2: the ranks share the slabs (rank 0 tunes, each writes the chunks of its own
// slabs) and the output is what one process writes; a rank that fails fails the job with
// its message and exit code.
TEST(Stream, MpirunWithTwoRanksWritesWhatOneProcessWrites) {
  if (!Ranks::built_with_mpi()) {
    std::printf("SKIPPED: this build has no MPI (libopenmpi-dev)\n");
    GTEST_SKIP();
  }
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) {
    std::printf("SKIPPED: mpirun not found (openmpi-bin)\n");
    GTEST_SKIP();
  }
  test::TempDir d;
  const std::string bb = save_tiny_backbone(d.file("bb.safetensors"));
  write_volume(d.file("in.tif"), stack(7, 37, 29));
  auto args = [&](const std::string& cmd, const std::string& out) {
    std::vector<std::string> a{"--threads", "1", cmd, d.file("in.tif"), "-o", out, "--backbone", bb,
                               "--tile", "64", "--batch", "1", "--max-memory", "0.0005"};
    if (cmd == "predict") a.insert(a.end(), {"--mode", "zero-shot"});
    if (cmd == "restore") a.insert(a.end(), {"--steps", "4", "--train-batch", "2", "--fallback", "none"});
    return a;
  };
  auto mpirun = [&](const std::vector<std::string>& a) {
    std::string cmd =
        "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 "
        "mpirun -np 2 " + std::string(ISO_BINARY);
    for (const std::string& s : a) cmd += " '" + s + "'";
    cmd += " >" + d.file("mpi.out") + " 2>" + d.file("mpi.err");
    const int rc = std::system(cmd.c_str());
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  };
  for (const char* cmd : {"predict", "restore"}) {
    const std::string one = d.file(std::string(cmd) + "_one.ome.zarr"), two = d.file(std::string(cmd) + "_two.tif");
    const test::CliResult r = test::run_cli(args(cmd, one));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    ASSERT_EQ(mpirun(args(cmd, two)), 0) << test::read_text(d.file("mpi.err"));
    EXPECT_NE(test::read_text(d.file("mpi.err")).find("mpirun: 2 ranks share the job"), std::string::npos)
        << test::read_text(d.file("mpi.err"));
    expect_same_voxels(read_volume(two), read_volume(one), cmd);
    EXPECT_FALSE(fs::exists(d.file(std::string(".") + cmd + "_two.tif.scratch")));
  }
  // A missing backbone: every rank fails, the job exits 2 with the message.
  std::vector<std::string> bad = args("predict", d.file("bad.tif"));
  bad[7] = d.file("missing.safetensors");
  EXPECT_EQ(mpirun(bad), 2);
  EXPECT_NE(test::read_text(d.file("mpi.err")).find("missing.safetensors"), std::string::npos)
      << test::read_text(d.file("mpi.err"));
  EXPECT_FALSE(fs::exists(d.file("bad.tif")));
}

// SIGKILL half-way through (nothing can catch it): no output under its name, and the same
// command run again continues and writes what an uninterrupted run writes.
TEST(Stream, AKilledRunRerunGivesTheSameOutput) {
  test::TempDir d;
  const std::string bb = save_tiny_backbone(d.file("bb.safetensors"));
  write_volume(d.file("in.tif"), stack(24, 96, 96));
  auto args = [&](const std::string& out) {
    std::string a = std::string(ISO_BINARY) + " --threads 1 predict '" + d.file("in.tif") + "' -o '" + out +
                    "' --mode zero-shot --backbone '" + bb + "' --tile 96 --batch 1 --max-memory 0.002";
    return a;
  };
  ASSERT_EQ(std::system((args(d.file("whole.tif")) + " >/dev/null 2>&1").c_str()), 0);
  const std::string out = d.file("out.tif"), scratch = d.file(".out.tif.scratch");
  // Started in the background; killed once the XZ pass has written its second slab.
  std::ofstream(d.file("kill.sh")) << args(out) << " >/dev/null 2>&1 &\n"
                                  << "pid=$!\n"
                                  << "for i in $(seq 1 4000); do [ -e '" << scratch
                                  << "/xz.partial.zarr/0/0.1.0' ] && break; sleep 0.005; done\n"
                                  << "kill -9 $pid; wait $pid\n";
  std::system(("bash '" + d.file("kill.sh") + "' >/dev/null 2>&1").c_str());
  ASSERT_FALSE(fs::exists(out)) << "the run finished before it was killed: make the stack larger";
  ASSERT_TRUE(fs::exists(scratch + "/xz.partial.zarr/0/0.0.0"));
  const test::CliResult r = test::run_cli({"--threads", "1", "predict", d.file("in.tif"), "-o", out, "--mode",
                                           "zero-shot", "--backbone", bb, "--tile", "96", "--batch", "1",
                                           "--max-memory", "0.002"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("continuing the interrupted run"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("continuing an interrupted run"), std::string::npos) << r.out;
  expect_same_voxels(read_volume(out), read_volume(d.file("whole.tif")), "after SIGKILL");
  EXPECT_FALSE(fs::exists(scratch));
}
