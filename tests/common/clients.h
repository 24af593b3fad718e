// The real programs that judge the files isoprompt writes: ImageJ 1.x (Debian's
// `imagej`, run in batch mode under Xvfb, since ImageJ 1.x needs a display even then),
// tifffile (napari's TIFF reader, Debian's python3-tifffile), zarr-python + numcodecs
// (python3-zarr, python3-numcodecs), h5py (python3-h5py) and headless Chromium (Debian's
// `chromium`, for the HTML report). scripts/setup.sh installs them for the tests; a
// run-time user needs none of them.
#pragma once

#include <string>
#include <vector>

#include "test_util.h"

namespace isoprompt::test {

// "" when the client can run, else why not (for a `SKIPPED: <reason>` line).
std::string imagej_missing();
std::string tifffile_missing();
// zarr-python with numcodecs (napari's OME-Zarr reader stack) and h5py, for /usr/bin/python3.
std::string zarr_missing();
std::string h5py_missing();
std::string chromium_missing();
// Versions as the clients report them ("1.53t", "2023.2.3"), for messages and the README.
std::string imagej_version();
std::string tifffile_version();

// Runs `macro_path` in ImageJ (`java -jar ij.jar -batch`) under `xvfb-run -a`. A JVM that
// hangs is killed after `timeout_s` seconds (exit code 124 or 137), so it fails the test
// instead of hanging the suite. `arg` is the macro's getArgument().
CliResult run_imagej_macro(const std::string& macro_path, int timeout_s,
                           const std::string& arg = "");
// Runs a Python script with the interpreter that has tifffile, zarr and h5py
// (/usr/bin/python3), with a timeout as above.
CliResult run_tifffile_script(const std::string& script_path, const std::vector<std::string>& args,
                              int timeout_s);
// Runs headless Chromium (`chromium --headless=new --no-sandbox --disable-gpu`, the sandbox
// off because the tests may run as root) with `args` and a fresh profile, killed after
// `timeout_s` seconds as above.
CliResult run_chromium(const std::vector<std::string>& args, int timeout_s);

}  // namespace isoprompt::test

// Skips the current test when a client is missing, printing the SKIPPED line the
// project's conventions ask for.
#define ISO_REQUIRE_CLIENT(missing_reason)               \
  do {                                                   \
    const std::string iso_reason_ = (missing_reason);    \
    if (!iso_reason_.empty()) {                          \
      std::printf("SKIPPED: %s\n", iso_reason_.c_str()); \
      GTEST_SKIP() << iso_reason_;                       \
    }                                                    \
  } while (0)
