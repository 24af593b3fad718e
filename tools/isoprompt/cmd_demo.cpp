#include "commands.h"

namespace isoprompt::cli {

void register_demo_commands(CLI::App& app) { (void)app; }

}  // namespace isoprompt::cli
