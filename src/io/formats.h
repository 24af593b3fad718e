// The per-format readers and writers behind read_volume / write_volume (io.cpp picks one
// from the path), and the checks they share.
#pragma once

#include <cstdint>
#include <string>

#include "isoprompt/io.h"

namespace isoprompt::io {

Volume read_tiff(const std::string& path, const ReadOptions& opts, TiffFileInfo* info);
void write_tiff(const std::string& path, const Volume& v, const WriteOptions& opts);
Volume read_zarr(const std::string& path, const ReadOptions& opts, TiffFileInfo* info);
void write_zarr(const std::string& path, const Volume& v, const WriteOptions& opts);
Volume read_hdf5(const std::string& path, const ReadOptions& opts, TiffFileInfo* info);
void write_hdf5(const std::string& path, const Volume& v, const WriteOptions& opts);

// The time point or channel to read: `requested` (-1: the only one) out of n. Throws
// InputError with the same wording for every format ("--channel 3 is out of range ...").
int select_index(int requested, int64_t n, const char* what, const char* flag,
                 const std::string& path);

// Throws InputError when a volume of `bytes` cannot fit in this machine's memory.
void check_fits_in_memory(double bytes, Shape3 shape, DType dtype, const std::string& path);

// Counts NaN/Inf voxels of a float volume into `info` and applies opts.nan (refuse,
// replace, or keep with a warning), as the TIFF reader does.
void apply_nan_policy(Volume& v, const ReadOptions& opts, const std::string& path,
                      TiffFileInfo& info);

// "1.5 GiB" for messages.
std::string human_size(double bytes);

}  // namespace isoprompt::io
