// Shared helpers for the test suite.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "isoprompt/error.h"

namespace isoprompt::test {

// Absolute path of a file in ../shared, or "" when ../shared is absent.
std::string shared_path(const std::string& rel);

// Result of running the isoprompt binary.
struct CliResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built isoprompt binary with `args` (shell-quoted here), capturing output.
CliResult run_cli(const std::vector<std::string>& args);

// A fresh empty directory under the build tree, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

std::string read_text(const std::string& path);

// The single "error: ..." line of stderr without its prefix (other lines may be warnings);
// a description of what was found when there is not exactly one.
std::string error_line(const std::string& err);

// The message of the InputError that `f()` throws, or "(no InputError)" when it returns
// (any other exception propagates, and fails the test).
template <class F>
std::string input_error_of(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no InputError)";
}

// Names in `dir`, sorted.
std::vector<std::string> files_in(const std::string& dir);

}  // namespace isoprompt::test

// Skips the current test when a file from ../shared is missing, printing the
// SKIPPED line the project's conventions ask for.
#define ISO_REQUIRE_SHARED(var, rel)                                               \
  const std::string var = ::isoprompt::test::shared_path(rel);                     \
  if (var.empty()) {                                                               \
    std::printf("SKIPPED: ../shared/%s is not available\n", std::string(rel).c_str()); \
    GTEST_SKIP() << "../shared/" << rel << " is not available";                    \
  }
