// Safe output files: write to a temporary sibling, then rename into place, so a
// failure or Ctrl-C never leaves a half-written or clobbered output.
#pragma once

#include <string>
#include <vector>

namespace isoprompt {

class AtomicOutput {
 public:
  // Directory: the caller creates temp_path() as a directory and fills it (an OME-Zarr
  // store); commit() swaps it with an existing directory at the final path atomically
  // (renameat2 RENAME_EXCHANGE) and removes the old one.
  enum Kind { File, Directory };
  explicit AtomicOutput(std::string final_path, Kind kind = File);
  // Resumable: the temporary is `kept_temp`, a fixed path the caller chooses, and it is kept
  // when the output is not committed (no clean-up on destruction or SIGTERM), so that a
  // later run can continue filling it.
  AtomicOutput(std::string final_path, Kind kind, std::string kept_temp);
  ~AtomicOutput();  // removes the temporary file (or directory) unless commit() ran
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  const std::string& temp_path() const { return temp_; }
  const std::string& final_path() const { return final_; }
  void commit();  // renames the temporary file onto the final path

 private:
  std::string final_, temp_;
  Kind kind_ = File;
  bool committed_ = false;
  bool keep_ = false;
};

// Unlinks the temporary files of every AtomicOutput not yet committed. Async-signal-safe:
// the SIGTERM/SIGHUP handler calls it before the process dies. (After SIGKILL, which no
// handler sees, the next AtomicOutput for the same path removes them; so it does for
// temporary directories, which unlink cannot remove.)
void remove_pending_temporaries();

// Throws InputError when `out` cannot be written: its directory is missing, or it
// names the same file as one of `inputs` (which would be clobbered). Volume paths are
// compared by the file or store they name (parse_volume_path), and an OME-Zarr output
// may be an existing directory only when it is empty or a Zarr store.
void check_output_path(const std::string& out, const std::vector<std::string>& inputs = {});

// Where a volume path points. `store.zarr`, `store.ome.zarr` and `store.zarr/0` (an
// array inside) are Zarr; `file.h5:/group/data`, `file.h5`, `file.hdf5` are HDF5; the
// rest TIFF. The suffix decides first, so `a.zarr/x.tif` is a TIFF.
enum class VolumeFormat { Tiff, Zarr, Hdf5 };
struct VolumePath {
  VolumeFormat format = VolumeFormat::Tiff;
  std::string file;   // the file, or the store directory
  std::string inner;  // the HDF5 dataset or the array inside the store; "" when not named
};
VolumePath parse_volume_path(const std::string& path);
// Throws InputError when `path` does not exist or is not a regular file.
void check_input_file(const std::string& path, const std::string& what = "input file");
bool file_exists(const std::string& path);
std::string lowercase_extension(const std::string& path);  // ".tif", ".ome.tif", ".safetensors"

}  // namespace isoprompt
