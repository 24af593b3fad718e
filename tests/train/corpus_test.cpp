// The real-image pretraining corpus: modality and acquisition groups from names, the
// whole-acquisition held-out split, reading 2D sets / stacks, the fixed validation set and
// the pair stream with real images (a pure function of the step, resumed bit-exactly).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "isoprompt/checkpoint.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/pretrain.h"
#include "test_util.h"
#include "tiff_fixtures.h"

namespace isoprompt {
namespace {

using test::TempDir;

struct QuietLogs {
  QuietLogs() { set_log_level(LogLevel::Warn); }
  ~QuietLogs() { set_log_level(LogLevel::Info); }
};

TEST(Corpus, ModalityFromTheFileName) {
  EXPECT_EQ(modality_of("em_sstem_cremi_val_10.tif"), Modality::EM);
  EXPECT_EQ(modality_of("/a/b/fluo_hela_ch0_neubias.tif"), Modality::Fluorescence);
  EXPECT_EQ(modality_of("stack.tif"), Modality::Other);
  EXPECT_EQ(modality_of("emission.tif"), Modality::Other);  // the prefix needs its underscore
  EXPECT_STREQ(modality_name(Modality::EM), "em");
  EXPECT_STREQ(modality_name(Modality::Fluorescence), "fluo");
}

TEST(Corpus, GroupJoinsChannelsSplitsAndPartsOfOneAcquisition) {
  EXPECT_EQ(corpus_group("fluo_hela_ch1_neubias.tif"), "fluo_hela");
  EXPECT_EQ(corpus_group("fluo_hela_ch2_neubias.tif"), "fluo_hela");
  EXPECT_EQ(corpus_group("em_sstem_cremi_val_10.tif"), "em_sstem_cremi");
  EXPECT_EQ(corpus_group("em_sstem_cremi_train_10.tif"), "em_sstem_cremi");
  EXPECT_EQ(corpus_group("em_sstem_isbi2012_test.tif"), "em_sstem_isbi2012");
  EXPECT_EQ(corpus_group("em_fibsem_epfl_hippocampus_slices.tif"), "em_fibsem_epfl_hippocampus");
  EXPECT_EQ(corpus_group("em_fibsem_epfl_hippocampus_test_8.tif"), "em_fibsem_epfl_hippocampus");
  EXPECT_EQ(corpus_group("fluo_bbbc034_hipsc_c2.tif"), "fluo_bbbc034_hipsc");
  EXPECT_EQ(corpus_group("fluo_cp_human_ht29_d0.tif"), "fluo_cp_human_ht29");
  EXPECT_EQ(corpus_group("fluo_stp_mousebrain_cellfinder_background.tif"),
            "fluo_stp_mousebrain_cellfinder");
  EXPECT_EQ(corpus_group("fluo_stp_mousebrain_cellfinder_signal.tif"),
            "fluo_stp_mousebrain_cellfinder");
  // Different acquisitions stay apart.
  EXPECT_EQ(corpus_group("em_cryoet_microtubule_13pf.tif"), "em_cryoet_microtubule_13pf");
  EXPECT_EQ(corpus_group("fluo_membranes_nuclei_big_ch0_neubias.tif"), "fluo_membranes_nuclei_big");
  EXPECT_EQ(corpus_group("stack.ome.tif"), "stack");
}

// Every 6th group of each modality (index 1, 7, ...) is held out, whole.
TEST(Corpus, SplitHoldsOutWholeGroupsPerModality) {
  std::vector<std::string> names = {
      "em_a.tif",      "em_b_ch0.tif",  "em_b_ch1.tif",   "em_c.tif",     "em_d.tif",
      "em_e.tif",      "em_f.tif",      "em_g_train.tif", "em_g_val.tif", "fluo_a.tif",
      "fluo_b_c0.tif", "fluo_b_c1.tif", "fluo_c.tif",     "other.tif",    "zz.tif"};
  const CorpusSplit s = split_corpus(names);
  // em groups a..g: only b has index 1 (mod 6); fluo a, b, c: b; other: other, zz: zz.
  EXPECT_EQ(s.held_out, (std::vector<std::string>{"em_b_ch0.tif", "em_b_ch1.tif", "fluo_b_c0.tif",
                                                  "fluo_b_c1.tif", "zz.tif"}));
  EXPECT_EQ(s.train.size() + s.held_out.size(), names.size());
  // The same split whatever the listing order.
  std::mt19937 rng(3);
  std::shuffle(names.begin(), names.end(), rng);
  const CorpusSplit t = split_corpus(names);
  EXPECT_EQ(t.train, s.train);
  EXPECT_EQ(t.held_out, s.held_out);
  EXPECT_THROW(split_corpus(names, 1), InputError);
}

// On the real corpus: no acquisition is on both sides, and both modalities are held out.
TEST(Corpus, RealCorpusSplitLeaksNoAcquisition) {
  ISO_REQUIRE_SHARED(dir, "data/pretrain");
  const CorpusSplit s = split_corpus(list_tiff_files(dir));
  std::set<std::string> train_groups;
  for (const auto& f : s.train) train_groups.insert(corpus_group(f));
  int em = 0, fluo = 0;
  for (const auto& f : s.held_out) {
    EXPECT_EQ(train_groups.count(corpus_group(f)), 0u) << f;
    em += modality_of(f) == Modality::EM;
    fluo += modality_of(f) == Modality::Fluorescence;
  }
  EXPECT_EQ(s.train.size() + s.held_out.size(), 87u);
  EXPECT_EQ(em, 2);
  EXPECT_EQ(fluo, 12);
}

// A 2D set (ImageJ TYX) gives one XY plane per frame, each normalised on its own; a 3D stack
// is isotropic only when calibrated so.
TEST(Corpus, LoadsEveryFrameOfA2DSet) {
  QuietLogs q;
  TempDir dir;
  std::vector<test::RawPage> pages;
  for (int t = 0; t < 3; ++t) {
    pages.push_back(test::make_page<uint16_t>(
        20, 12, [t](uint32_t y, uint32_t x) { return (t + 1) * (y * 20 + x); }));
  }
  pages[0].description = "ImageJ=1.53t\nimages=3\nframes=3\nhyperstack=true\n";
  const std::string path = dir.file("fluo_set.tif");
  test::write_raw_tiff(path, pages);
  const CorpusImage img = load_corpus_image(path);
  EXPECT_EQ(img.name, "fluo_set.tif");
  EXPECT_EQ(img.modality, Modality::Fluorescence);
  EXPECT_FALSE(img.isotropic);
  ASSERT_EQ(img.planes.shape(), (Shape3{3, 12, 20}));
  // Frame t is (t+1) x the same ramp, so after per-frame normalisation all frames are equal.
  const float* d = img.planes.data<float>();
  for (int64_t i = 0; i < 240; ++i) {
    EXPECT_FLOAT_EQ(d[i], d[240 + i]);
    EXPECT_FLOAT_EQ(d[i], d[480 + i]);
  }
  EXPECT_LT(d[0], 0.0f);    // below the 1st percentile
  EXPECT_GT(d[239], 1.0f);  // above the 99.8th

  Volume iso({6, 16, 16}, DType::U8, {0.1, 0.1, 0.1});
  write_volume(dir.file("em_iso.tif"), iso);
  EXPECT_TRUE(load_corpus_image(dir.file("em_iso.tif")).isotropic);
  Volume aniso({6, 16, 16}, DType::U8, {0.4, 0.1, 0.1});
  write_volume(dir.file("em_aniso.tif"), aniso);
  EXPECT_FALSE(load_corpus_image(dir.file("em_aniso.tif")).isotropic);
}

CorpusImage ramp_image(const std::string& name, Modality m, int64_t nz, int64_t n, bool iso) {
  CorpusImage img;
  img.name = name;
  img.modality = m;
  img.isotropic = iso;
  img.planes = Volume({nz, n, n}, DType::F32, {1, 1, 1}, "pixel");
  float* d = img.planes.data<float>();
  for (int64_t i = 0; i < img.planes.numel(); ++i) d[i] = float((i * 7919) % 101) / 100.0f;
  return img;
}

SwinConfig tiny_config() {
  SwinConfig c;
  c.embed_dim = 8;
  c.depths = {1, 1};
  c.num_heads = {2, 2};
  c.window_size = 4;
  c.img_size = 8;
  c.num_feat = 4;
  c.mlp_ratio = 1.0;
  return c;
}

PretrainParams corpus_run(const TempDir& dir) {
  PretrainParams p;
  p.config = tiny_config();
  p.steps = 6;
  p.batch = 3;
  p.pairs.crop = 16;
  p.pairs.interp = Interp::BSpline3;
  p.phantom_size = 24;
  p.phantom_every = 2;
  p.warmup = 2;
  p.lr = 1e-3;
  p.val_pairs = 2;
  p.val_crop = 16;
  p.val_every = 3;
  p.seed = 5;
  p.data_fraction = 0.8;
  p.corpus = {ramp_image("em_a.tif", Modality::EM, 3, 20, false),
              ramp_image("fluo_b.tif", Modality::Fluorescence, 4, 24, true)};
  p.val_corpus = {ramp_image("em_v.tif", Modality::EM, 2, 18, false)};
  p.checkpoint_path = dir.file("ckpt.safetensors");
  return p;
}

// Groups: modalities with held-out images, then phantoms, each at x2, x4, x8.
TEST(ValSet, GroupsPerModalityAndFactorIndependentOfTheSeed) {
  QuietLogs q;
  TempDir dir;
  PretrainParams p = corpus_run(dir);
  const ValSet a = make_val_set(p);
  ASSERT_EQ(a.groups.size(), 6u);
  const char* modality[] = {"em", "em", "em", "phantom", "phantom", "phantom"};
  const double factor[] = {2, 4, 8, 2, 4, 8};
  for (size_t g = 0; g < 6; ++g) {
    EXPECT_EQ(a.groups[g].modality, modality[g]);
    EXPECT_EQ(a.groups[g].factor, factor[g]);
    EXPECT_EQ(a.offset[g], int64_t(2 * g));
  }
  EXPECT_EQ(a.input.sizes(), (std::vector<int64_t>{12, 1, 16, 16}));
  p.seed = 6;
  p.corpus.clear();  // training data do not enter validation
  const ValSet b = make_val_set(p);
  EXPECT_TRUE(at::equal(a.input, b.input));
  EXPECT_TRUE(at::equal(a.target, b.target));
  // A stronger degradation makes a worse input: mean PSNR of x2 above x8, in both groups.
  SwinIR net(tiny_config());
  identity_init(net);
  ValSet c = make_val_set(p);
  validate_net(net, c, c10::Device(c10::kCPU));
  EXPECT_GT(c.groups[0].psnr_input, c.groups[2].psnr_input);
  EXPECT_NEAR(c.groups[0].gain(), 0.0, 1e-3);  // the identity-initialised net returns its input
}

TEST(ValSet, TextAndJson) {
  std::vector<ValGroup> g(2);
  g[0].modality = "em";
  g[0].factor = 4;
  g[0].pairs = 64;
  g[0].psnr_input = 25.0;
  g[0].psnr_output = 25.4567;
  g[1].modality = "phantom";
  g[1].factor = 2;
  g[1].psnr_input = 30;
  g[1].psnr_output = 29.9;
  EXPECT_EQ(val_gains_text(g), "em x4 +0.457, phantom x2 -0.100 dB");
  EXPECT_EQ(
      val_groups_json({g[0]}),
      R"([{"modality":"em","factor":4.0,"pairs":64,"psnr_input":25.0,"psnr_output":25.4567}])");
}

// With real images in the stream, the batch of step s is still a pure function of s.
TEST(TrainingBatch, WithCorpusPureFunctionOfStep) {
  QuietLogs q;
  TempDir dir;
  const PretrainParams p = corpus_run(dir);
  PhantomPool warm, fresh;
  at::Tensor x, y, x4, y4, xf, yf;
  for (int64_t s = 0; s < 4; ++s) training_batch(p, s, warm, x, y);
  training_batch(p, 4, warm, x4, y4);
  training_batch(p, 4, fresh, xf, yf);
  EXPECT_TRUE(at::equal(x4, xf));
  EXPECT_TRUE(at::equal(y4, yf));
}

// 6 steps straight == 3 + resume + 3 with real images and a held-out set.
TEST(Pretrain, ResumeWithCorpusIsBitExact) {
  QuietLogs q;
  TempDir a, b;
  PretrainParams pa = corpus_run(a);
  pa.log_csv = a.file("log.csv");
  pretrain(pa);
  PretrainParams pb = corpus_run(b);
  pb.steps = 3;
  pretrain(pb);
  pb.steps = 6;
  pb.resume_path = pb.checkpoint_path;
  const PretrainResult r = pretrain(pb);
  EXPECT_EQ(r.val_groups.size(), 6u);
  const TensorMap ta = read_safetensors(pa.checkpoint_path),
                  tb = read_safetensors(pb.checkpoint_path);
  ASSERT_EQ(ta.size(), tb.size());
  for (const auto& [name, t] : ta) EXPECT_TRUE(at::equal(t, tb.at(name))) << name;
  const std::string log = test::read_text(pa.log_csv);
  EXPECT_EQ(
      log.rfind(
          "step,loss,lr,val_psnr_input,val_psnr_output,seconds,gain_em_x2,gain_em_x4,gain_em_x8,"
          "gain_phantom_x2,gain_phantom_x4,gain_phantom_x8\n",
          0),
      0u)
      << log;
  // The held-out file name is in the stream settings: resuming with another split is refused.
  pb.val_corpus[0].name = "em_w.tif";
  EXPECT_THROW(pretrain(pb), InputError);
}

}  // namespace
}  // namespace isoprompt
