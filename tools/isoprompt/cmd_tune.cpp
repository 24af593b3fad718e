#include "commands.h"

namespace isoprompt::cli {

void register_tune_command(CLI::App& app) { (void)app; }

}  // namespace isoprompt::cli
