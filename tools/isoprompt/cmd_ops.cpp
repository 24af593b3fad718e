#include "commands.h"

namespace isoprompt::cli {

void register_ops_commands(CLI::App& app) { (void)app; }

}  // namespace isoprompt::cli
