#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <sstream>

#include <torch/torch.h>

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/prompted.h"

namespace isoprompt {

namespace {

std::string num(double v) { return fmt::format("{}", v); }

std::string short_hash(const std::string& h) { return h.size() > 12 ? h.substr(0, 12) : h; }

struct MetaReader {
  const std::map<std::string, std::string>& m;
  const std::string& source;

  const std::string& str(const std::string& key) const {
    auto it = m.find(key);
    if (it == m.end())
      throw CheckpointError(fmt::format("prompt file {} lacks the metadata key '{}'", source, key));
    return it->second;
  }
  std::string str_or(const std::string& key, const std::string& def) const {
    auto it = m.find(key);
    return it == m.end() ? def : it->second;
  }
  double real(const std::string& key) const {
    const std::string& s = str(key);
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (s.empty() || *end != '\0')
      throw CheckpointError(
          fmt::format("prompt file {}: metadata '{}' is not a number: '{}'", source, key, s));
    return v;
  }
  // Sizes are bounded as the CLI bounds them: the module is allocated from them.
  int64_t integer(const std::string& key, int64_t lo = 0, int64_t hi = INT64_MAX) const {
    const std::string& s = str(key);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(s.c_str(), &end, 10);
    if (s.empty() || *end != '\0' || errno == ERANGE)
      throw CheckpointError(
          fmt::format("prompt file {}: metadata '{}' is not an integer: '{}'", source, key, s));
    if (v < lo || v > hi)
      throw CheckpointError(
          fmt::format("prompt file {}: metadata '{}' = {} is outside {}..{}", source, key, v, lo, hi));
    return v;
  }
};

// Files written before the interpolation rename say "cubic" for Keys a = -0.5, which the
// CLI now calls "keys" ("cubic" became the B-spline). Files therefore never say "cubic"
// any more: the B-spline is written "bspline", and a "cubic" read back is an older Keys file.
const char* interp_file_name(Interp m) { return m == Interp::BSpline3 ? "bspline" : interp_name(m); }
Interp interp_from_file(const std::string& s) { return s == "cubic" ? Interp::Keys : parse_interp(s); }

torch::Device device_of(const SwinIR& net) {
  const auto ps = net->parameters();
  return ps.empty() ? torch::Device(torch::kCPU) : ps.front().device();
}

}  // namespace

const char* mode_name(TuneMode m) {
  switch (m) {
    case TuneMode::Full:
      return "full";
    case TuneMode::UNet:
      return "unet";
    case TuneMode::Prompt:
      break;
  }
  return "prompt";
}

TuneMode parse_tune_mode(const std::string& s) {
  if (s == "prompt") return TuneMode::Prompt;
  if (s == "full") return TuneMode::Full;
  if (s == "unet") return TuneMode::UNet;
  throw_input("unknown tuning mode '{}' (expected prompt, full or unet)", s);
}

const char* degrade_model_name(DegradeParams::Model m) {
  return m == DegradeParams::Psf ? "psf" : "average";
}

const char* validation_kind(const PromptInfo& info) {
  return info.val_in_sample ? "in-sample" : "held-out";
}

std::map<std::string, std::string> PromptInfo::to_metadata() const {
  std::map<std::string, std::string> m;
  m["isoprompt_kind"] = mode_name(mode);  // "prompt", "full" or "unet"
  m["isoprompt_version"] = version.empty() ? ISOPROMPT_VERSION : version;
  m["backbone_name"] = backbone_name;
  m["backbone_hash"] = backbone_hash;
  m["mode"] = mode_name(mode);
  m["factor"] = num(factor);
  m["degrade"] = degrade_model_name(degrade.model);
  m["psf_fwhm_um"] = num(degrade.psf_fwhm_um);
  m["psf_sigma_px"] = num(degrade.psf_sigma_px);
  m["psf_profile"] = fmt::format("{}", fmt::join(degrade.psf_profile, ","));
  m["poisson_peak"] = num(degrade.poisson_peak);
  m["gaussian_sigma"] = num(degrade.gaussian_sigma);
  m["interp"] = interp_file_name(interp);
  m["norm_lo"] = num(norm.lo);
  m["norm_hi"] = num(norm.hi);
  m["norm_pmin"] = num(pmin);
  m["norm_pmax"] = num(pmax);
  if (mode == TuneMode::UNet) {
    m["unet_config"] = unet.to_json();
  } else {
    m["placement"] = placement_name(prompt.placement);
    m["num_prompts"] = std::to_string(prompt.num_prompts);
    m["attn_dim"] = std::to_string(prompt.attn_dim);
    m["query_rank"] = std::to_string(prompt.query_rank);
  }
  m["steps"] = std::to_string(steps);
  m["best_step"] = std::to_string(best_step);
  m["val_psnr"] = num(val_psnr);
  m["zero_shot_psnr"] = num(zero_shot_psnr);
  m["interp_psnr"] = num(interp_psnr);
  m["validation"] = validation_kind(*this);
  m["seconds"] = num(seconds);
  return m;
}

PromptInfo PromptInfo::from_metadata(const std::map<std::string, std::string>& m,
                                     const std::string& source) {
  const MetaReader r{m, source};
  PromptInfo p;
  const std::string kind = r.str("isoprompt_kind");
  if (kind != "prompt" && kind != "full" && kind != "unet")
    throw CheckpointError(fmt::format("prompt file {} has an unknown kind '{}'", source, kind));
  try {
    p.mode = parse_tune_mode(r.str("mode"));
    p.degrade.model = r.str("degrade") == "psf" ? DegradeParams::Psf : DegradeParams::Average;
    p.interp = interp_from_file(r.str("interp"));
    if (p.mode != TuneMode::UNet) p.prompt.placement = parse_placement(r.str("placement"));
  } catch (const CheckpointError&) {
    throw;
  } catch (const InputError& e) {
    throw CheckpointError(fmt::format("prompt file {}: {}", source, e.what()));
  }
  if ((kind == "unet") != (p.mode == TuneMode::UNet))
    throw CheckpointError(fmt::format("prompt file {}: kind '{}' does not match mode '{}'", source,
                                      kind, mode_name(p.mode)));
  p.version = r.str("isoprompt_version");
  p.backbone_name = r.str("backbone_name");
  p.backbone_hash = r.str("backbone_hash");
  p.factor = r.real("factor");
  p.degrade.factor = p.factor;
  p.degrade.psf_fwhm_um = r.real("psf_fwhm_um");
  p.degrade.psf_sigma_px = r.real("psf_sigma_px");
  std::stringstream prof(r.str_or("psf_profile", ""));
  for (std::string tok; std::getline(prof, tok, ',');)
    if (!tok.empty()) p.degrade.psf_profile.push_back(std::strtod(tok.c_str(), nullptr));
  p.degrade.poisson_peak = r.real("poisson_peak");
  p.degrade.gaussian_sigma = r.real("gaussian_sigma");
  p.norm.lo = r.real("norm_lo");
  p.norm.hi = r.real("norm_hi");
  p.pmin = r.real("norm_pmin");
  p.pmax = r.real("norm_pmax");
  if (p.mode == TuneMode::UNet) {
    p.unet = UNetConfig::from_json(r.str("unet_config"));
  } else {
    p.prompt.num_prompts = r.integer("num_prompts", 0, 4096);
    p.prompt.attn_dim = r.integer("attn_dim", 0, 4096);
    p.prompt.query_rank = r.integer("query_rank", 0, 4096);
  }
  p.steps = r.integer("steps");
  p.best_step = r.integer("best_step");
  p.val_psnr = r.real("val_psnr");
  p.zero_shot_psnr = r.real("zero_shot_psnr");
  p.interp_psnr = r.real("interp_psnr");
  const std::string validation = r.str_or("validation", "held-out");  // older files: held-out
  if (validation != "held-out" && validation != "in-sample")
    throw CheckpointError(fmt::format("prompt file {}: metadata 'validation' is '{}' (expected "
                                      "held-out or in-sample)", source, validation));
  p.val_in_sample = validation == "in-sample";
  p.seconds = r.real("seconds");
  return p;
}

void save_prompt(const std::string& path, const PromptedModel& model, const PromptInfo& info) {
  check_output_path(path);
  if (info.mode == TuneMode::Full) {
    save_backbone(path, model.backbone().net, info.to_metadata());
    return;
  }
  if (info.mode == TuneMode::UNet)
    throw_error("a U-Net is saved with save_unet, not from a prompted model");
  if (!model.has_prompts()) throw_error("cannot save a prompt file: the model has no prompt modules");
  TensorList tensors;
  for (const auto& kv : model.prompt_state()) tensors.emplace_back(kv.first, kv.second.detach().cpu());
  write_safetensors(path, tensors, info.to_metadata());
}

void save_unet(const std::string& path, const UNet& unet, const PromptInfo& info) {
  check_output_path(path);
  if (info.mode != TuneMode::UNet)
    throw_error("cannot save a {} state as a U-Net file", mode_name(info.mode));
  if (!unet) throw_error("cannot save a U-Net file: there is no U-Net");
  TensorList tensors;
  for (const auto& kv : unet->weights()) tensors.emplace_back(kv.first, kv.second.detach().cpu());
  write_safetensors(path, tensors, info.to_metadata());
}

PromptInfo read_prompt_info(const std::string& path) {
  check_input_file(path, "prompt file");
  std::map<std::string, std::string> meta;
  read_safetensors(path, &meta);
  if (!meta.count("isoprompt_kind"))
    throw CheckpointError(fmt::format("{} is not an isoprompt prompt file (no isoprompt metadata)", path));
  return PromptInfo::from_metadata(meta, path);
}

// The tensors of a prompt file (finite-checked) and its metadata into `info`.
static TensorMap read_prompt_file(const std::string& path, PromptInfo& info) {
  check_input_file(path, "prompt file");
  std::map<std::string, std::string> meta;
  TensorMap tensors = read_safetensors(path, &meta);
  if (!meta.count("isoprompt_kind"))
    throw CheckpointError(fmt::format("{} is not an isoprompt prompt file (no isoprompt metadata)", path));
  check_finite_weights(tensors, path);
  info = PromptInfo::from_metadata(meta, path);
  return tensors;
}

LoadedPrompt load_prompt(const std::string& path, const Backbone& backbone) {
  LoadedPrompt out;
  const TensorMap tensors = read_prompt_file(path, out.info);
  if (out.info.mode == TuneMode::UNet)
    throw CheckpointError(fmt::format(
        "{} holds a U-Net trained from scratch (mode unet), which needs no backbone", path));
  if (out.info.backbone_hash != backbone.hash)
    throw CheckpointError(fmt::format("prompt {} was tuned for backbone {} (hash {}), not {} (hash {})",
                                      path, out.info.backbone_name, short_hash(out.info.backbone_hash),
                                      backbone.name, short_hash(backbone.hash)));
  if (out.info.mode == TuneMode::Full) {
    Backbone tuned = load_backbone(path, device_of(backbone.net));
    out.model = PromptedModel(tuned, out.info.prompt, false);
  } else {
    out.model = PromptedModel(backbone, out.info.prompt, true);
    out.model.load_prompt_state(tensors, path);
  }
  return out;
}

LoadedPrompt load_unet(const std::string& path, torch::Device device) {
  LoadedPrompt out;
  const TensorMap tensors = read_prompt_file(path, out.info);
  if (out.info.mode != TuneMode::UNet)
    throw CheckpointError(
        fmt::format("{} holds a {} for backbone {}, not a U-Net (mode unet)", path,
                    out.info.mode == TuneMode::Full ? "fully tuned model" : "prompt",
                    out.info.backbone_name));
  out.unet = UNet(out.info.unet);
  out.unet->load_weights(tensors, path);
  out.unet->to(device);
  out.unet->eval();
  for (auto& t : out.unet->parameters()) t.requires_grad_(false);
  return out;
}

}  // namespace isoprompt
