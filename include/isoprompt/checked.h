// Overflow-checked integer arithmetic for sizes, strides, offsets and plane counts read
// from files. Every reader multiplies header numbers with these before allocating or
// indexing anything: a crafted header must become an InputError, never a wrapped value.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>

namespace isoprompt {

// a * b, or nullopt when it does not fit in int64_t.
inline std::optional<int64_t> checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// a + b, or nullopt when it does not fit in int64_t.
inline std::optional<int64_t> checked_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// The product of `factors`, or nullopt when it overflows int64_t or exceeds `limit`.
template <typename Range>
std::optional<int64_t> checked_product(const Range& factors, int64_t limit = INT64_MAX) {
  int64_t p = 1;
  for (const auto f : factors) {
    const auto next = checked_mul(p, static_cast<int64_t>(f));
    if (!next || *next > limit) return std::nullopt;
    p = *next;
  }
  return p;
}
inline std::optional<int64_t> checked_product(std::initializer_list<int64_t> factors,
                                              int64_t limit = INT64_MAX) {
  return checked_product<std::initializer_list<int64_t>>(factors, limit);
}

}  // namespace isoprompt
