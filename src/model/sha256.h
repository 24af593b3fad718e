// Internal: incremental SHA-256.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

namespace isoprompt::detail {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t n);
  void update(const std::string& s) { update(s.data(), s.size()); }
  std::string hex();  // finalises; call once

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

}  // namespace isoprompt::detail
