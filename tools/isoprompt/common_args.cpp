#include "common_args.h"

#include <cmath>
#include <cstdio>
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

void parse_crop(const std::string& s, int64_t& crop_min, int64_t& crop_max) {
  long long a = 0, b = 0;
  char extra;
  if (std::sscanf(s.c_str(), "%lld-%lld%c", &a, &b, &extra) == 2) {
  } else if (std::sscanf(s.c_str(), "%lld%c", &a, &extra) == 1) {
    b = a;
  } else {
    throw_input("--crop expects N or MIN-MAX in pixels, got '{}'", s);
  }
  if (a < 8 || b < a || b > 4096) throw_input("--crop sizes must satisfy 8 <= MIN <= MAX <= 4096, got '{}'", s);
  crop_min = a;
  crop_max = b;
}

double parse_factor(const std::string& text) {
  if (text == "auto") return 0;
  char* end = nullptr;
  const double k = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(k) || k < 1 || k > 1000)
    throw_input("--factor must be 'auto' or a number in 1..1000 (z-step / xy-pixel), got '{}'", text);
  return k;
}

c10::Device parse_device(const std::string& text) {
  try {
    return c10::Device(text);
  } catch (const std::exception&) {
    throw_input("--device must be cpu, cuda or cuda:N, got '{}'", text);
  }
}

}  // namespace isoprompt::cli
