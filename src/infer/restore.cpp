#include "isoprompt/restore.h"

#include <algorithm>
#include <cmath>

namespace isoprompt {

Interp backbone_input_interp(const Backbone& backbone) {
  const auto it = backbone.metadata.find("input_interp");
  return it == backbone.metadata.end() ? Interp::Keys : parse_interp(it->second);
}

Interp resolve_interp(const std::string& flag, const Backbone* backbone) {
  if (flag != "auto") return parse_interp(flag);
  return backbone ? backbone_input_interp(*backbone) : Interp::BSpline3;
}

bool model_beats_interpolation(const PromptInfo& info) {
  // A gain below 0.01 dB (the precision the logs show) is rounding, not an improvement: an
  // identity network differs from its input by float rounding alone.
  constexpr double kMinGainDb = 0.01;
  return std::isfinite(info.val_psnr) && info.val_psnr >= info.interp_psnr + kMinGainDb;
}

RestorerCost swin_cost(const SwinConfig& config) {
  int64_t heads = 1;
  for (int64_t h : config.num_heads) heads = std::max(heads, h);
  RestorerCost cost = swin_cost(config.embed_dim, heads, config.window_size, config.mlp_ratio);
  cost.fixed_bytes = 4.0 * static_cast<double>(config.parameter_count());
  return cost;
}

SliceRestorer model_restorer(PromptedModel& model) {
  const int64_t window = model.backbone().config.window_size;
  return pad_small_slices([&model](const at::Tensor& x) { return model.forward(x); }, window);
}

Volume reconstruct_with_model(const Volume& input, ReconstructParams params, PromptedModel& model,
                              ReconstructReport* report, Volume* uncertainty) {
  params.cost = swin_cost(model.backbone().config);
  model.to(params.device);
  return reconstruct(input, params, model_restorer(model), report, uncertainty);
}

RestorerCost unet_cost(const UNetConfig& config) {
  // At full resolution a forward pass holds the input, one level-0 skip (F channels), the
  // conv being computed (F in, F out) and, on the way up, the 2F-channel concatenation: about
  // 6F floats per pixel at peak; deeper levels hold a quarter as many pixels per level.
  RestorerCost cost;
  cost.bytes_per_pixel = 4.0 * 6.0 * static_cast<double>(config.filters) * 1.5;  // allocator slack
  cost.fixed_bytes = 4.0 * static_cast<double>(config.parameter_count());
  cost.multiple = config.multiple();
  return cost;
}

SliceRestorer unet_restorer(UNet& net) {
  return [&net](const at::Tensor& x) { return net->forward(x); };
}

Volume reconstruct_with_model(const Volume& input, ReconstructParams params, UNet& net,
                              ReconstructReport* report, Volume* uncertainty) {
  params.cost = unet_cost(net->config());
  net->to(params.device);
  return reconstruct(input, params, unet_restorer(net), report, uncertainty);
}

}  // namespace isoprompt
