// Tiny model configurations for tests that need a backbone but not a good one.
#pragma once

#include "isoprompt/model.h"

namespace isoprompt::test {

// SwinIR with embed_dim 12, one stage of depth 1 with 2 heads, num_feat 8: a few thousand
// parameters, fast enough to tune for a step inside a CLI test.
SwinConfig tiny_swin_config();

}  // namespace isoprompt::test
