// libFuzzer target: reading a prompt file from bytes: the safetensors container, the
// isoprompt metadata (PromptInfo::from_metadata: kinds, names, numbers, size ranges) and,
// for prompt-mode files, loading the tensors into prompt modules on a tiny backbone
// (PromptedModel::load_prompt_state: names and shapes), as load_prompt does. Modules are
// only built for sizes up to 64 so that one input costs milliseconds, not a 4096x4096
// allocation; the ranges themselves are checked by from_metadata for every input.
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>

#include "fuzz_common.h"
#include "isoprompt/checkpoint.h"
#include "isoprompt/error.h"
#include "isoprompt/model.h"
#include "isoprompt/prompted.h"

using namespace isoprompt;

namespace {

Backbone* g_backbone = nullptr;

Backbone tiny_backbone() {
  torch::manual_seed(1);
  SwinConfig c;
  c.embed_dim = 8;
  c.depths = {1, 1};
  c.num_heads = {2, 2};
  c.window_size = 4;
  c.img_size = 8;
  c.num_feat = 4;
  c.mlp_ratio = 1.0;
  Backbone b;
  b.config = c;
  b.net = SwinIR(c);
  b.net->eval();
  b.name = "tiny";
  b.hash = backbone_hash(b.net);
  return b;
}

// Seeds: prompt files of the tiny backbone written by save_prompt itself (ISO_FUZZ_WRITE_SEED
// = a folder, used by fuzz/make_seeds.py), so they match what load_prompt_state expects.
void write_seeds(const std::string& dir) {
  const std::pair<const char*, PromptConfig::Placement> placements[] = {
      {"tail", PromptConfig::Placement::Tail}, {"both", PromptConfig::Placement::Both}};
  for (const auto& [name, placement] : placements) {
    PromptConfig cfg;
    cfg.num_prompts = 4;
    cfg.attn_dim = 8;
    cfg.query_rank = 2;
    cfg.placement = placement;
    PromptedModel model(*g_backbone, cfg, true);
    PromptInfo info;
    info.backbone_name = g_backbone->name;
    info.backbone_hash = g_backbone->hash;
    info.factor = 4.5;
    info.prompt = model.config();
    info.steps = 10;
    info.best_step = 7;
    save_prompt(dir + "/" + name + ".prompt.safetensors", model, info);
  }
  std::exit(0);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  at::set_num_threads(1);
  g_backbone = new Backbone(tiny_backbone());
  if (const char* dir = std::getenv("ISO_FUZZ_WRITE_SEED")) write_seeds(dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    std::map<std::string, std::string> meta;
    const TensorMap tensors = parse_safetensors(bytes, "fuzz.prompt.safetensors", &meta);
    if (!meta.count("isoprompt_kind")) return 0;
    check_finite_weights(tensors, "fuzz.prompt.safetensors");
    const PromptInfo info = PromptInfo::from_metadata(meta, "fuzz.prompt.safetensors");
    FUZZ_CHECK(info.prompt.num_prompts >= 0 && info.prompt.num_prompts <= 4096);
    FUZZ_CHECK(info.prompt.attn_dim >= 0 && info.prompt.attn_dim <= 4096);
    FUZZ_CHECK(info.prompt.query_rank >= 0 && info.prompt.query_rank <= 4096);
    if (info.mode == TuneMode::Full || info.prompt.num_prompts > 64 ||
        info.prompt.attn_dim > 64 || info.prompt.query_rank > 64)
      return 0;
    PromptedModel model(*g_backbone, info.prompt, true);
    model.load_prompt_state(tensors, "fuzz.prompt.safetensors");
  } catch (const CheckpointError&) {
  }
  return 0;
}
