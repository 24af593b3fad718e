// `isoprompt info` and `isoprompt convert`.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.h"
#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/io.h"
#include "isoprompt/log.h"
#include "isoprompt/stats.h"

namespace isoprompt::cli {

namespace {

const std::vector<double> kPercentiles = {0.1, 1, 50, 99, 99.8, 99.9};

// Unit as people write it: "µm" for micrometres.
std::string display_unit(const std::string& unit) {
  return unit_to_micron(unit) == 1.0 ? std::string("\xC2\xB5m") : unit;
}

std::string num(double v) { return fmt::format("{:.6g}", v); }

std::string format_line(const TiffFileInfo& fi) {
  if (fi.container == "Zarr") {
    std::string s = fi.flavor == "OME-Zarr" ? "OME-Zarr" : "Zarr array (no OME metadata)";
    if (!fi.format_version.empty()) s += " " + fi.format_version;
    s += fmt::format(", Zarr v2, array {}", fi.dataset);
    if (fi.levels > 1) s += fmt::format(" (level 0 of {})", fi.levels);
    s += fi.compression == "none" ? ", uncompressed" : ", " + fi.compression;
    s += fmt::format(", chunks {}x{}x{}", fi.chunks.z, fi.chunks.y, fi.chunks.x);
    if (fi.big_endian) s += ", big-endian";
    return s;
  }
  if (fi.container == "HDF5") {
    std::string s = "HDF5, dataset " + fi.dataset;
    s += fi.tiled ? fmt::format(", chunks {}x{}x{}", fi.chunks.z, fi.chunks.y, fi.chunks.x) : ", contiguous";
    if (fi.tiled) s += fi.compression == "none" ? ", uncompressed" : ", " + fi.compression;
    if (fi.big_endian) s += ", big-endian";
    return s;
  }
  std::string s = fi.flavor == "OME" ? "OME-TIFF" : fi.flavor == "ImageJ" ? "ImageJ TIFF" : "plain TIFF";
  s += fi.bigtiff ? ", BigTIFF" : ", classic TIFF";
  s += fi.big_endian ? ", big-endian" : ", little-endian";
  s += fi.compression == "none" ? ", uncompressed" : ", " + fi.compression;
  s += fi.tiled ? ", tiled" : ", striped";
  s += fmt::format(", {} page{}", fi.pages, fi.pages == 1 ? "" : "s");
  return s;
}

struct InfoArgs {
  std::string file;
  bool json = false;
  int channel = -1, time = -1;
};

void run_info(const InfoArgs& a) {
  apply_globals();
  ReadOptions ro;
  ro.channel = a.channel;
  ro.time = a.time;
  ro.allow_2d = true;  // info describes 2D images too
  TiffFileInfo fi;
  const Volume v = read_volume(a.file, ro, &fi);
  const IntensityStats st = intensity_stats(v);
  std::vector<double> pct(kPercentiles.size(), 0.0);
  if (st.finite_count > 0) pct = percentiles(v, kPercentiles);
  const VoxelSize& vs = v.voxel_size();

  if (a.json) {
    nlohmann::json j;
    j["file"] = a.file;
    j["format"] = {{"container", fi.container}, {"flavor", fi.flavor},     {"bigtiff", fi.bigtiff},   {"compression", fi.compression},
                   {"tiled", fi.tiled},       {"byte_order", fi.big_endian ? "big-endian" : "little-endian"},
                   {"pages", fi.pages},       {"channels", fi.channels}, {"time_points", fi.times},
                   {"channel", fi.channel},   {"time", fi.time}};
    if (fi.container != "TIFF") {
      j["format"]["dataset"] = fi.dataset;
      j["format"]["chunks"] = {fi.chunks.z, fi.chunks.y, fi.chunks.x};
      if (fi.container == "Zarr") j["format"]["levels"] = fi.levels;
      if (!fi.format_version.empty()) j["format"]["version"] = fi.format_version;
    }
    j["shape"] = {v.nz(), v.ny(), v.nx()};
    j["dtype"] = dtype_name(v.dtype());
    j["voxel_size"] = {vs.z, vs.y, vs.x};
    j["unit"] = v.unit();
    j["calibrated"] = fi.calibrated;
    j["anisotropy"] = vs.anisotropy();
    nlohmann::json in = {{"min", st.min},   {"max", st.max},           {"mean", st.mean},
                         {"std", st.std},   {"finite", st.finite_count}, {"nan", st.nan_count},
                         {"inf", st.inf_count}};
    j["intensity"] = in;
    nlohmann::json p = nlohmann::json::object();
    for (size_t i = 0; i < kPercentiles.size(); ++i) p[fmt::format("{}", kPercentiles[i])] = pct[i];
    j["percentiles"] = p;
    nlohmann::json notes = nlohmann::json::object();
    for (const auto& [k, val] : fi.notes) notes[k] = val;
    if (!fi.notes.empty()) j["isoprompt"] = notes;
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }

  std::string out;
  out += fmt::format("file         {}\n", a.file);
  out += fmt::format("format       {}\n", format_line(fi));
  if (fi.channels > 1 || fi.times > 1)
    out += fmt::format("hyperstack   {} channel(s), {} time point(s); showing channel {}, time {}\n", fi.channels,
                       fi.times, fi.channel, fi.time);
  out += fmt::format("shape        {} x {} x {} (z, y, x)\n", v.nz(), v.ny(), v.nx());
  out += fmt::format("dtype        {}\n", dtype_name(v.dtype()));
  if (fi.calibrated) {
    out += fmt::format("voxel size   {} x {} x {} {} (z, y, x)\n", num(vs.z), num(vs.y), num(vs.x),
                       display_unit(v.unit()));
    out += fmt::format("anisotropy   {:.2f} (z-step / xy-pixel)\n", vs.anisotropy());
  } else {
    out += "voxel size   1 x 1 x 1 pixel (uncalibrated: set it with `isoprompt convert --voxel-size z,y,x`)\n";
    out += "anisotropy   unknown (uncalibrated)\n";
  }
  if (vs.y != vs.x) out += fmt::format("note         pixels are not square: y {} vs x {}\n", num(vs.y), num(vs.x));
  if (st.finite_count > 0) {
    out += fmt::format("intensity    min {}  max {}  mean {}  std {}\n", num(st.min), num(st.max), num(st.mean),
                       num(st.std));
    std::string p;
    for (size_t i = 0; i < kPercentiles.size(); ++i)
      p += fmt::format("{}p{} {}", i ? "  " : "", fmt::format("{}", kPercentiles[i]), num(pct[i]));
    out += fmt::format("percentiles  {}\n", p);
  } else {
    out += "intensity    no finite voxels\n";
  }
  if (v.dtype() == DType::F32)
    out += fmt::format("non-finite   {} NaN, {} Inf{}\n", st.nan_count, st.inf_count,
                       st.nan_count + st.inf_count ? "  (warning: excluded from the statistics)" : "");
  // Provenance isoprompt wrote: the method, its scores and any fallback.
  for (const auto& [k, val] : fi.notes) out += fmt::format("{:<12} {}\n", k, val);
  std::fputs(out.c_str(), stdout);
}

struct ConvertArgs {
  std::string in, out;
  std::string dtype, voxel_size, unit, format, compression, chunks;
  int pyramid = 1;
  bool bigtiff = false, allow_2d = false;
  int channel = -1, time = -1;
};

void run_convert(const ConvertArgs& a) {
  apply_globals();
  // Cheap checks first, so a typo does not cost a full read.
  WriteOptions wo;
  const VolumeFormat out_format = parse_volume_path(a.out).format;
  if (out_format == VolumeFormat::Zarr) {
    if (!a.format.empty()) throw_input("--format is for TIFF outputs; {} is OME-Zarr by its name", a.out);
    if (!a.compression.empty()) wo.zarr.compressor = parse_zarr_compressor(a.compression);
    if (!a.chunks.empty()) {
      double c[3] = {0, 0, 0};
      parse_triple(a.chunks, "--chunks", c);
      for (double v : c)
        if (!(v >= 1 && v <= 65536 && v == std::floor(v)))
          throw_input("--chunks {} must be three whole numbers 1..65536 (z,y,x)", a.chunks);
      wo.zarr.chunks = {int64_t(c[0]), int64_t(c[1]), int64_t(c[2])};
    }
    wo.zarr.levels = a.pyramid;
  } else {
    if (a.pyramid != 1 || !a.chunks.empty())
      throw_input("--pyramid and --chunks are for OME-Zarr outputs (a path ending in .zarr), not {}", a.out);
    if (!a.format.empty()) wo.flavor = parse_flavor(a.format);
    wo.compression = parse_compression(a.compression.empty() ? "none" : a.compression);
  }
  wo.force_bigtiff = a.bigtiff;
  const bool change_dtype = !a.dtype.empty();
  const DType target = change_dtype ? parse_dtype(a.dtype) : DType::U8;
  double vs[3] = {0, 0, 0};
  if (!a.voxel_size.empty()) parse_triple(a.voxel_size, "--voxel-size", vs);
  if (!a.unit.empty() && a.unit != "pixel" && unit_to_micron(a.unit) <= 0)
    throw_input("unknown --unit '{}' (expected a length unit such as um, nm, mm, or pixel)", a.unit);
  check_input_volume(a.in, "input file");
  check_output_path(a.out, {a.in});

  ReadOptions ro;
  ro.channel = a.channel;
  ro.time = a.time;
  ro.allow_2d = a.allow_2d;
  Volume v = read_volume(a.in, ro);
  if (!a.voxel_size.empty()) {
    // Values are in --unit (default micrometres); stored in micrometres when it is a known length.
    const std::string u = a.unit.empty() ? "micron" : a.unit;
    const double f = unit_to_micron(u);
    if (f > 0) {
      v.set_voxel_size({scale_to_micron(vs[0], f), scale_to_micron(vs[1], f), scale_to_micron(vs[2], f)});
      v.set_unit("micron");
    } else {
      v.set_voxel_size({vs[0], vs[1], vs[2]});
      v.set_unit(u);
    }
  } else if (a.unit == "pixel") {
    v.set_voxel_size({1, 1, 1});  // drop the calibration
    v.set_unit("pixel");
  } else if (!a.unit.empty()) {
    log_warn("--unit {} is ignored without --voxel-size (it gives the unit of --voxel-size)", a.unit);
  }
  if (change_dtype && target != v.dtype()) {
    if (target != DType::F32) {
      const IntensityStats st = intensity_stats(v);
      const double hi = target == DType::U8 ? 255.0 : 65535.0;
      if (st.min < 0 || st.max > hi)
        log_warn("values {}..{} of {} do not fit {}: they are clipped to 0..{} (rescale first to keep them)",
                 st.min, st.max, a.in, dtype_name(target), hi);
      if (st.nan_count) log_warn("{} NaN voxels of {} become 0 in {}", st.nan_count, a.in, dtype_name(target));
    }
    v = v.astype(target);
  }
  write_volume(a.out, v, wo);
  const std::string ext = lowercase_extension(a.out);
  const bool ome = wo.flavor == WriteOptions::OME ||
                   (wo.flavor == WriteOptions::Auto && (ext == ".ome.tif" || ext == ".ome.tiff"));
  std::string container = ome ? "OME-TIFF" : "ImageJ TIFF";
  std::string compression = a.compression.empty() || a.compression == "none" ? "" : ", " + a.compression;
  if (out_format == VolumeFormat::Zarr) {
    container = fmt::format("OME-Zarr 0.4, {} level{}", wo.zarr.levels, wo.zarr.levels == 1 ? "" : "s");
    compression = std::string(", ") + zarr_compressor_name(wo.zarr.compressor);
  } else if (out_format == VolumeFormat::Hdf5) {
    container = "HDF5";
  }
  const VoxelSize& s = v.voxel_size();
  std::printf("wrote %s: %s %s, voxel %s x %s x %s %s, %s%s\n", a.out.c_str(), to_string(v.shape()).c_str(),
              dtype_name(v.dtype()), num(s.z).c_str(), num(s.y).c_str(), num(s.x).c_str(),
              display_unit(v.unit()).c_str(), container.c_str(), compression.c_str());
}

}  // namespace

void register_io_commands(CLI::App& app) {
  {
    auto args = std::make_shared<InfoArgs>();
    auto* c = app.add_subcommand("info", "Describe a stack: shape, dtype, voxel size, anisotropy, intensities");
    c->add_option("file", args->file, "TIFF / OME-TIFF file, OME-Zarr store (.zarr) or HDF5 (file.h5:/dataset)")
        ->required();
    c->add_flag("--json", args->json, "print one JSON object instead of text");
    c->add_option("--channel", args->channel, "channel to describe (0-based) when the file has several")
        ->check(CLI::NonNegativeNumber);
    c->add_option("--time", args->time, "time point to describe (0-based) when the file has several")
        ->check(CLI::NonNegativeNumber);
    c->callback([args] { run_info(*args); });
  }
  {
    auto args = std::make_shared<ConvertArgs>();
    auto* c = app.add_subcommand("convert", "Convert a stack: format, dtype, compression, calibration");
    c->add_option("in", args->in, "input TIFF / OME-TIFF, OME-Zarr (.zarr) or HDF5 (file.h5:/dataset)")->required();
    c->add_option("out", args->out,
                  "output (.tif: ImageJ TIFF, .ome.tif: OME-TIFF, .zarr/.ome.zarr: OME-Zarr, .h5[:/dataset]: HDF5)")
        ->required();
    c->add_option("--dtype", args->dtype, "output dtype: uint8, uint16, float32 (integers round and clip)");
    c->add_option("--voxel-size", args->voxel_size, "set the voxel size z,y,x (in --unit, default µm)");
    c->add_option("--unit", args->unit, "unit of --voxel-size: um (default), nm, mm, or pixel");
    c->add_option("--format", args->format, "imagej or ome (default: from the output name)");
    c->add_option("--compression", args->compression,
                  "TIFF: none (default), deflate or lzw; HDF5: none or deflate; OME-Zarr: blosc-lz4 (default), "
                  "blosc-zstd, zstd, zlib, gzip or none");
    c->add_option("--pyramid", args->pyramid,
                  "OME-Zarr: multiscales levels, each more halving y and x (1 = full resolution only)")
        ->capture_default_str()
        ->check(CLI::Range(1, 32));
    c->add_option("--chunks", args->chunks, "OME-Zarr: chunk shape z,y,x (default: at most 32,256,256)");
    c->add_flag("--bigtiff", args->bigtiff, "write BigTIFF even when the data are under 4 GiB");
    c->add_flag("--allow-2d", args->allow_2d, "accept a single-plane (2D) input");
    c->add_option("--channel", args->channel, "channel to take (0-based) when the input has several")
        ->check(CLI::NonNegativeNumber);
    c->add_option("--time", args->time, "time point to take (0-based) when the input has several")
        ->check(CLI::NonNegativeNumber);
    c->callback([args] { run_convert(*args); });
  }
}

}  // namespace isoprompt::cli
