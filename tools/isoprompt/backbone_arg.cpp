#include "backbone_arg.h"

#include <cstdlib>

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"

namespace isoprompt::cli {

std::string resolve_backbone_path(const std::string& arg) {
  if (!arg.empty() && arg != "default") {
    check_input_file(arg, "backbone file");
    return arg;
  }
  const std::string name = "isoprompt-default.safetensors";
  std::string looked;
  if (const char* env = std::getenv("ISOPROMPT_MODELS"); env && *env) {
    const std::string p = std::string(env) + "/" + name;
    if (file_exists(p)) return p;
    looked = p + " ($ISOPROMPT_MODELS), ";
  }
  const std::string p = std::string(ISO_SOURCE_DIR) + "/models/" + name;
  if (file_exists(p)) return p;
  throw_input("default backbone not found (looked for {}{}); pass --backbone FILE", looked, p);
}

}  // namespace isoprompt::cli
