#include "commands.h"

namespace isoprompt::cli {

void register_method_commands(CLI::App& app) { (void)app; }

}  // namespace isoprompt::cli
