#include "commands.h"

namespace isoprompt::cli {

void register_model_commands(CLI::App& app) { (void)app; }

}  // namespace isoprompt::cli
