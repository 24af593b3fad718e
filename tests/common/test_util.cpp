#include "test_util.h"

#include "tiny_models.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

namespace fs = std::filesystem;

namespace isoprompt::test {

SwinConfig tiny_swin_config() {
  SwinConfig c;
  c.embed_dim = 12;
  c.depths = {1};
  c.num_heads = {2};
  c.num_feat = 8;
  return c;
}

std::string shared_path(const std::string& rel) {
  const fs::path p = fs::path(ISO_SHARED_DIR) / rel;
  std::error_code ec;
  return fs::exists(p, ec) ? p.string() : std::string();
}

namespace {
std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}
}  // namespace

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string error_line(const std::string& err) {
  std::string found;
  int n = 0;
  size_t start = 0;
  while (start < err.size()) {
    size_t end = err.find('\n', start);
    if (end == std::string::npos) end = err.size();
    const std::string line = err.substr(start, end - start);
    if (line.rfind("error: ", 0) == 0) {
      found = line.substr(7);
      ++n;
    }
    start = end + 1;
  }
  return n == 1 ? found : "(" + std::to_string(n) + " error lines in: " + err + ")";
}

std::vector<std::string> files_in(const std::string& dir) {
  std::vector<std::string> names;
  for (auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

CliResult run_cli(const std::vector<std::string>& args) {
  TempDir tmp;
  std::string cmd = shell_quote(ISO_BINARY);
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " >" + shell_quote(tmp.file("out")) + " 2>" + shell_quote(tmp.file("err")) + " </dev/null";
  const int status = std::system(cmd.c_str());
  CliResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_text(tmp.file("out"));
  r.err = read_text(tmp.file("err"));
  return r;
}

TempDir::TempDir() {
  static std::mt19937_64 rng(std::random_device{}());
  const fs::path base = fs::temp_directory_path() / "isoprompt-tests";
  fs::create_directories(base);
  for (;;) {
    fs::path p = base / ("t" + std::to_string(::getpid()) + "-" + std::to_string(rng() % 1000000000));
    if (fs::create_directory(p)) {
      path_ = p.string();
      break;
    }
  }
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

}  // namespace isoprompt::test
