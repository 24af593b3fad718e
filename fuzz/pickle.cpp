// libFuzzer target: the pickle VM and state_dict extraction of torch.save checkpoints
// (detail::state_dict_from_pickle: data.pkl of a .pt/.pth), on bytes in memory. Storages
// come from a stand-in for the zip records, each 4096 bytes long; every tensor returned
// must lie inside its storage.
#include "model/pickle.h"

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "isoprompt/checked.h"
#include "isoprompt/error.h"

using namespace isoprompt;

namespace {

constexpr int64_t kRecordBytes = 4096;

at::Tensor load_storage(const std::string& key, at::ScalarType dt, int64_t numel) {
  // As read_torch_checkpoint's loader: the record must hold numel elements.
  const auto need = checked_mul(numel, static_cast<int64_t>(c10::elementSize(dt)));
  if (numel < 0 || !need || *need > kRecordBytes)
    throw CheckpointError("fuzz.pt is corrupt: storage data/" + key + " is too small");
  return at::zeros({numel}, at::TensorOptions().dtype(dt));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    std::vector<std::string> order;
    const auto sd =
        isoprompt::detail::state_dict_from_pickle(bytes, "fuzz.pt", load_storage, &order);
    FUZZ_CHECK(!sd.empty() && order.size() == sd.size());
    for (const auto& [name, t] : sd) {
      FUZZ_CHECK(t.defined());
      if (t.numel() == 0) continue;
      // The lowest and highest element the view reaches, in elements of its storage.
      int64_t lo = t.storage_offset(), hi = t.storage_offset();
      for (int64_t d = 0; d < t.dim(); ++d) {
        const int64_t span = (t.size(d) - 1) * t.stride(d);
        (span < 0 ? lo : hi) += span;
      }
      const int64_t storage_elems = static_cast<int64_t>(t.storage().nbytes() / t.element_size());
      FUZZ_CHECK(lo >= 0 && hi < storage_elems);
      (void)t.sum().item<double>();  // reads every element of the view
    }
  } catch (const CheckpointError&) {
  }
  return 0;
}
