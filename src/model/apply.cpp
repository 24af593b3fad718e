// Plane-wise application of the network to a volume.
#include <torch/nn/module.h>

#include "isoprompt/error.h"
#include "isoprompt/model.h"
#include "isoprompt/progress.h"
#include "isoprompt/tensor.h"

namespace isoprompt {

Volume apply_planewise(SwinIR& net, const Volume& v, Plane plane, int64_t batch) {
  if (batch < 1) throw_input("--batch must be at least 1, got {}", batch);
  if (v.empty()) throw_input("the input volume is empty");
  if (net->config().in_chans != 1)
    throw_input("model apply needs a single-channel model, this one has in_chans = {}", net->config().in_chans);
  torch::NoGradGuard ng;
  net->eval();
  at::Tensor vol = to_float_tensor(v);  // z, y, x
  Volume out = v.like(DType::F32);
  at::Tensor res = to_tensor(out).data;  // shares out's buffer
  // Put the plane index first: XY (z, y, x), XZ (y, z, x), YZ (x, z, y).
  auto planes_first = [&](const at::Tensor& t) {
    switch (plane) {
      case Plane::XY: return t;
      case Plane::XZ: return t.permute({1, 0, 2});
      case Plane::YZ: return t.permute({2, 0, 1});
    }
    return t;
  };
  const at::Tensor src = planes_first(vol), dst = planes_first(res);
  const int64_t n = src.size(0);
  at::Device device = torch::kCPU;
  for (const auto& p : net->parameters()) {
    device = p.device();
    break;
  }
  Progress progress("model apply", n, "slices");
  for (int64_t i = 0; i < n; i += batch) {
    const int64_t b = std::min(batch, n - i);
    at::Tensor x = src.slice(0, i, i + b).unsqueeze(1).to(device);
    at::Tensor y = net->forward(x).squeeze(1).to(at::kCPU);
    dst.slice(0, i, i + b).copy_(y);
    progress.update(i + b);
  }
  progress.finish();
  return out;
}

}  // namespace isoprompt
