#include "clients.h"

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace isoprompt::test {
namespace {

const char* kImageJJar = "/usr/share/java/ij.jar";
const char* kPython = "/usr/bin/python3";  // Debian's, where python3-tifffile lives

std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

bool on_path(const std::string& program) {
  return std::system(("command -v " + program + " >/dev/null 2>&1").c_str()) == 0;
}

CliResult run_shell(const std::string& cmd) {
  TempDir tmp;
  const std::string full =
      cmd + " >" + quote(tmp.file("out")) + " 2>" + quote(tmp.file("err")) + " </dev/null";
  const int status = std::system(full.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(tmp.file("out"));
  r.err = read_text(tmp.file("err"));
  return r;
}

std::string first_line(std::string s) {
  const auto nl = s.find('\n');
  if (nl != std::string::npos) s.resize(nl);
  return s;
}

}  // namespace

std::string imagej_missing() {
  if (!fs::exists(kImageJJar))
    return std::string(kImageJJar) + " is missing (Debian package imagej)";
  if (!on_path("java")) return "java is not installed (needed by ImageJ)";
  if (!on_path("xvfb-run"))
    return "xvfb-run is missing (Debian package xvfb; ImageJ 1.x needs a display)";
  if (!on_path("xauth")) return "xauth is missing (needed by xvfb-run)";
  return "";
}

std::string tifffile_missing() {
  if (!fs::exists(kPython)) return std::string(kPython) + " is missing";
  if (std::system((std::string(kPython) + " -c 'import tifffile' >/dev/null 2>&1").c_str()) != 0)
    return "tifffile is not installed for /usr/bin/python3 (Debian package python3-tifffile)";
  return "";
}

namespace {
std::string python_module_missing(const std::string& module, const std::string& package) {
  if (!fs::exists(kPython)) return std::string(kPython) + " is missing";
  if (std::system((std::string(kPython) + " -c 'import " + module + "' >/dev/null 2>&1").c_str()) != 0)
    return module + " is not installed for /usr/bin/python3 (Debian package " + package + ")";
  return "";
}
}  // namespace

// Each answer costs a Python start: asked once per test process.
std::string zarr_missing() {
  static const std::string reason = [] {
    const std::string z = python_module_missing("zarr", "python3-zarr");
    return z.empty() ? python_module_missing("numcodecs", "python3-numcodecs") : z;
  }();
  return reason;
}

std::string h5py_missing() {
  static const std::string reason = python_module_missing("h5py", "python3-h5py");
  return reason;
}

std::string chromium_missing() {
  if (!on_path("chromium")) return "chromium is not installed (Debian package chromium)";
  return "";
}

CliResult run_chromium(const std::vector<std::string>& args, int timeout_s) {
  // A fresh profile per run: a shared one is locked by a concurrent test and keeps state.
  TempDir profile;
  std::string cmd = "timeout -k 10 " + std::to_string(timeout_s) +
                    " chromium --headless=new --no-sandbox --disable-gpu --no-first-run "
                    "--disable-extensions --user-data-dir=" +
                    quote(profile.path());
  for (const auto& a : args) cmd += " " + quote(a);
  return run_shell(cmd);
}

CliResult run_imagej_macro(const std::string& macro_path, int timeout_s, const std::string& arg) {
  return run_shell("timeout -k 10 " + std::to_string(timeout_s) + " xvfb-run -a java -jar " +
                   quote(kImageJJar) + " -batch " + quote(macro_path) +
                   (arg.empty() ? "" : " " + quote(arg)));
}

CliResult run_tifffile_script(const std::string& script_path, const std::vector<std::string>& args,
                              int timeout_s) {
  std::string cmd =
      "timeout -k 10 " + std::to_string(timeout_s) + " " + kPython + " " + quote(script_path);
  for (const auto& a : args) cmd += " " + quote(a);
  return run_shell(cmd);
}

std::string imagej_version() {
  TempDir dir;
  const std::string macro = dir.file("v.ijm");
  std::ofstream(macro) << "print(\"IJ \" + getVersion());\n";
  const CliResult r = run_imagej_macro(macro, 60);
  const auto at = r.out.find("IJ ");
  return at == std::string::npos ? "unknown" : first_line(r.out.substr(at + 3));
}

std::string tifffile_version() {
  const CliResult r =
      run_shell(std::string(kPython) + " -c 'import tifffile; print(tifffile.__version__)'");
  return r.exit_code == 0 ? first_line(r.out) : "unknown";
}

}  // namespace isoprompt::test
