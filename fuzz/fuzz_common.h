// Shared by the libFuzzer targets: quiet logging, and a check that aborts (a finding)
// when an invariant the callers of a parser rely on does not hold.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "isoprompt/log.h"

#define FUZZ_CHECK(cond)                                                                  \
  do {                                                                                    \
    if (!(cond)) {                                                                        \
      std::fprintf(stderr, "%s:%d: invariant violated: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                       \
    }                                                                                     \
  } while (0)

namespace isoprompt::fuzz {

// Warnings for malformed input are expected by the thousand; printing them would cost
// more than the parsing.
inline void quiet() {
  set_log_level(LogLevel::Quiet);
}

}  // namespace isoprompt::fuzz
