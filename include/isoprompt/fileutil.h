// Safe output files: write to a temporary sibling, then rename into place, so a
// failure or Ctrl-C never leaves a half-written or clobbered output.
#pragma once

#include <string>
#include <vector>

namespace isoprompt {

class AtomicOutput {
 public:
  explicit AtomicOutput(std::string final_path);
  ~AtomicOutput();  // removes the temporary file unless commit() ran
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  const std::string& temp_path() const { return temp_; }
  const std::string& final_path() const { return final_; }
  void commit();  // renames the temporary file onto the final path

 private:
  std::string final_, temp_;
  bool committed_ = false;
};

// Unlinks the temporary files of every AtomicOutput not yet committed. Async-signal-safe:
// the SIGTERM/SIGHUP handler calls it before the process dies. (After SIGKILL, which no
// handler sees, the next AtomicOutput for the same path removes them.)
void remove_pending_temporaries();

// Throws InputError when `out` cannot be written: its directory is missing, or it
// names the same file as one of `inputs` (which would be clobbered).
void check_output_path(const std::string& out, const std::vector<std::string>& inputs = {});
// Throws InputError when `path` does not exist or is not a regular file.
void check_input_file(const std::string& path, const std::string& what = "input file");
bool file_exists(const std::string& path);
std::string lowercase_extension(const std::string& path);  // ".tif", ".ome.tif", ".safetensors"

}  // namespace isoprompt
