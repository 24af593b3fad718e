// libFuzzer target: the safetensors reader (parse_safetensors: header length, JSON header,
// dtypes, shapes, data_offsets, overlaps, __metadata__) on bytes in memory.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "isoprompt/checkpoint.h"
#include "isoprompt/error.h"

using namespace isoprompt;

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  fuzz::quiet();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  try {
    std::map<std::string, std::string> meta;
    std::vector<std::string> order;
    const TensorMap m = parse_safetensors(bytes, "fuzz.safetensors", &meta, &order);
    FUZZ_CHECK(order.size() == m.size());
    int64_t total = 0;
    for (const auto& [name, t] : m) {
      FUZZ_CHECK(t.is_contiguous());
      total += t.numel() * t.element_size();
    }
    FUZZ_CHECK(total <= static_cast<int64_t>(size));  // tensors own disjoint bytes of the file
  } catch (const CheckpointError&) {
  }
  return 0;
}
