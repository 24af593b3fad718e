// OME-Zarr metadata: .zarray and the NGFF `multiscales` of .zattrs, parsed into a layout
// (no file access here, so the fuzz target runs it on strings).
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "io/metadata.h"
#include "isoprompt/checked.h"
#include "isoprompt/error.h"
#include "isoprompt/log.h"
#include "isoprompt/zarr.h"

namespace isoprompt::io {
namespace {

using nlohmann::json;

// A JSON value for an error message: compact, printable, and short.
std::string shown(const json& j) {
  std::string s = printable(j.dump(-1, ' ', false, json::error_handler_t::replace));
  if (s.size() > 80) s = s.substr(0, 77) + "...";
  return s;
}

json parse_json(const std::string& text, const std::string& file) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw_input("malformed JSON in {}", file);
  if (!j.is_object())
    throw_input("bad Zarr metadata in {}: expected a JSON object, got {}", file, shown(j));
  return j;
}

// A list of positive integers (shape, chunks).
std::vector<int64_t> positive_list(const json& z, const char* key, const std::string& file) {
  if (!z.contains(key)) throw_input("bad .zarray {}: no '{}'", file, key);
  const json& a = z[key];
  std::vector<int64_t> out;
  bool ok = a.is_array() && !a.empty() && a.size() <= 32;
  for (size_t i = 0; ok && i < a.size(); ++i) {
    ok = a[i].is_number_integer() && a[i].get<int64_t>() >= 1;
    if (ok) out.push_back(a[i].get<int64_t>());
  }
  if (!ok)
    throw_input("bad .zarray {}: '{}' must be a list of positive integers, got {}", file, key,
                shown(a));
  return out;
}

// Zarr's fill_value for our dtypes: a number (an integer in range for integer types), or
// "NaN" / "Infinity" / "-Infinity" for floats; null means 0 here.
double fill_value(const json& z, DType dtype, const std::string& file) {
  if (!z.contains("fill_value") || z["fill_value"].is_null()) return 0.0;
  const json& f = z["fill_value"];
  if (dtype == DType::F32) {
    // A finite value must be a float32 one (converting a larger double is undefined).
    if (f.is_number() && std::fabs(f.get<double>()) <= std::numeric_limits<float>::max())
      return f.get<double>();
    if (f.is_string()) {
      const std::string s = f.get<std::string>();
      if (s == "NaN") return std::numeric_limits<double>::quiet_NaN();
      if (s == "Infinity") return std::numeric_limits<double>::infinity();
      if (s == "-Infinity") return -std::numeric_limits<double>::infinity();
    }
    throw_input("bad .zarray {}: fill_value {} is not a float32 value", file, shown(f));
  }
  const double hi = dtype == DType::U8 ? 255.0 : 65535.0;
  // Booleans are numbers to nlohmann but not to zarr.
  if (f.is_number_integer() ||
      (f.is_number_float() && f.get<double>() == std::floor(f.get<double>()))) {
    const double v = f.get<double>();
    if (v >= 0 && v <= hi) return v;
  }
  throw_input("bad .zarray {}: fill_value {} is not a {} value", file, shown(f), dtype_name(dtype));
}

int64_t ceil_div(int64_t a, int64_t b) {
  return a / b + (a % b != 0);
}

// Largest chunk this reader decodes: a thread holds one decoded chunk at a time, and
// blosc cannot hold more than 2 GiB.
constexpr int64_t kMaxChunkBytes = int64_t(1) << 30;

enum class Role { Time, Channel, Z, Y, X, Other };

struct Axis {
  std::string name, type, unit;
};

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The scale of a coordinateTransformations list (all 1 when it has none). Translations
// are allowed (they only move the origin); anything else is refused.
std::vector<double> scale_of(const json& list, size_t ndim, const std::string& where,
                             const std::string& file) {
  std::vector<double> scale(ndim, 1.0);
  if (!list.is_array())
    throw_input("bad .zattrs {}: {} coordinateTransformations must be a list, got {}", file, where,
                shown(list));
  int n_scale = 0;
  for (const json& t : list) {
    const std::string type = t.is_object() && t.contains("type") && t["type"].is_string()
                                 ? t["type"].get<std::string>()
                                 : "";
    if (type == "translation" || type == "identity") continue;
    if (type != "scale")
      throw_input(
          "bad .zattrs {}: {} has a coordinate transformation {} (only scale and translation are "
          "supported)",
          file, where, shown(t));
    if (!t.contains("scale"))
      throw_input(
          "bad .zattrs {}: {} scale transformation has no 'scale' list (a 'path' to one is not "
          "supported): {}",
          file, where, shown(t));
    const json& s = t["scale"];
    if (!s.is_array() || s.size() != ndim)
      throw_input("bad .zattrs {}: {} scale {} must have {} numbers (one per axis)", file, where,
                  shown(s), ndim);
    for (size_t i = 0; i < ndim; ++i) {
      if (!s[i].is_number() || !(s[i].get<double>() > 0) || !std::isfinite(s[i].get<double>()))
        throw_input("bad .zattrs {}: {} scale {} must be positive finite numbers", file, where,
                    shown(s));
      scale[i] *= s[i].get<double>();
    }
    ++n_scale;
  }
  if (n_scale > 1)
    throw_input("bad .zattrs {}: {} has {} scale transformations (at most one)", file, where,
                n_scale);
  return scale;
}

}  // namespace

std::string ZarrArrayMeta::compression_name() const {
  if (compressor.empty()) return "none";
  if (compressor != "blosc") return compressor;
  std::string s = "blosc-" + (blosc_cname.empty() ? std::string("?") : blosc_cname);
  if (blosc_shuffle == 1) s += " (shuffle)";
  if (blosc_shuffle == 2) s += " (bitshuffle)";
  if (blosc_shuffle == -1) s += " (auto shuffle)";
  return s;
}

ZarrArrayMeta parse_zarray(const std::string& text, const std::string& file) {
  const json z = parse_json(text, file);
  ZarrArrayMeta m;
  if (!z.contains("zarr_format") || !z["zarr_format"].is_number_integer())
    throw_input("bad .zarray {}: no integer 'zarr_format'", file);
  if (z["zarr_format"].get<int64_t>() != 2)
    throw_input("unsupported Zarr format in {}: zarr_format {} (only Zarr v2 is supported)", file,
                shown(z["zarr_format"]));
  m.shape = positive_list(z, "shape", file);
  m.chunks = positive_list(z, "chunks", file);
  if (m.chunks.size() != m.shape.size())
    throw_input("bad .zarray {}: chunks {} and shape {} have different lengths", file,
                shown(z["chunks"]), shown(z["shape"]));

  if (!z.contains("dtype") || !z["dtype"].is_string())
    throw_input("bad .zarray {}: 'dtype' must be a string, got {}", file,
                z.contains("dtype") ? shown(z["dtype"]) : "nothing");
  m.dtype_text = z["dtype"].get<std::string>();
  const std::string& d = m.dtype_text;
  if (d == "|u1" || d == "<u1" || d == ">u1") {
    m.dtype = DType::U8;
  } else if (d == "<u2" || d == ">u2") {
    m.dtype = DType::U16;
    m.big_endian = d[0] == '>';
  } else if (d == "<f4" || d == ">f4") {
    m.dtype = DType::F32;
    m.big_endian = d[0] == '>';
  } else {
    throw_input("unsupported dtype '{}' in {} (supported: |u1, <u2, >u2, <f4, >f4)", printable(d),
                file);
  }

  if (z.contains("order") && !(z["order"].is_string() && z["order"].get<std::string>() == "C"))
    throw_input("unsupported order {} in {} (only C order is supported)", shown(z["order"]), file);
  if (z.contains("filters") && !z["filters"].is_null() &&
      !(z["filters"].is_array() && z["filters"].empty()))
    throw_input("unsupported filters {} in {} (only arrays without filters are supported)",
                shown(z["filters"]), file);

  if (!z.contains("compressor"))
    throw_input("bad .zarray {}: no 'compressor' (null for none)", file);
  const json& c = z["compressor"];
  if (!c.is_null()) {
    if (!c.is_object() || !c.contains("id") || !c["id"].is_string())
      throw_input("bad .zarray {}: compressor {} has no 'id'", file, shown(c));
    m.compressor = c["id"].get<std::string>();
    if (m.compressor != "blosc" && m.compressor != "zstd" && m.compressor != "zlib" &&
        m.compressor != "gzip")
      throw_input("unsupported compressor '{}' in {} (supported: blosc, zstd, zlib, gzip, none)",
                  printable(m.compressor), file);
    if (m.compressor == "blosc") {
      if (c.contains("cname") && c["cname"].is_string())
        m.blosc_cname = printable(c["cname"].get<std::string>());
      if (c.contains("shuffle") && c["shuffle"].is_number_integer())
        m.blosc_shuffle = c["shuffle"].get<int>();
    }
  }
  m.fill_value = fill_value(z, m.dtype, file);

  if (z.contains("dimension_separator") && !z["dimension_separator"].is_null()) {
    const json& s = z["dimension_separator"];
    if (!s.is_string() || (s.get<std::string>() != "." && s.get<std::string>() != "/"))
      throw_input("bad .zarray {}: dimension_separator {} must be \".\" or \"/\"", file, shown(s));
    m.separator = s.get<std::string>()[0];
  }

  const int64_t item = static_cast<int64_t>(dtype_size(m.dtype));
  const auto chunk_elems = checked_product(m.chunks, kMaxChunkBytes / item);
  if (!chunk_elems)
    throw_input("implausible .zarray {}: chunks {} hold more than {} per chunk", file,
                shown(z["chunks"]), "1 GiB");
  m.chunk_elements = *chunk_elems;
  m.chunk_bytes = m.chunk_elements * item;
  if (!checked_product(m.shape, INT64_MAX / item))
    throw_input("implausible .zarray {}: shape {} has more than 2^63 bytes", file,
                shown(z["shape"]));
  for (size_t i = 0; i < m.shape.size(); ++i) m.grid.push_back(ceil_div(m.shape[i], m.chunks[i]));
  return m;
}

ZarrLayout parse_zarr_layout(const std::string& zarray_text, const std::string& zarray_file,
                             const std::string& zattrs_text, const std::string& zattrs_file,
                             const std::string& dataset_path) {
  ZarrLayout lay;
  lay.array = parse_zarray(zarray_text, zarray_file);
  const size_t ndim = lay.array.shape.size();
  const std::string& file = zattrs_file;

  std::vector<Axis> axes;
  bool have_axes = false;
  std::vector<double> scale(ndim, 1.0);
  if (!zattrs_text.empty()) {
    const json a = parse_json(zattrs_text, zattrs_file);
    if (a.contains("multiscales")) {
      const json& ms = a["multiscales"];
      if (!ms.is_array() || ms.empty() || !ms[0].is_object())
        throw_input("bad .zattrs {}: 'multiscales' must be a non-empty list of objects, got {}",
                    file, shown(ms));
      const json& m = ms[0];
      if (m.contains("version") && m["version"].is_string())
        lay.ngff_version = printable(m["version"].get<std::string>());
      if (!m.contains("datasets") || !m["datasets"].is_array() || m["datasets"].empty())
        throw_input("bad .zattrs {}: multiscales[0] has no 'datasets' list", file);
      const json& ds = m["datasets"];
      lay.n_levels = static_cast<int>(std::min<size_t>(ds.size(), 1000));
      const json* dataset = nullptr;
      for (const json& d : ds) {
        if (!d.is_object() || !d.contains("path") || !d["path"].is_string())
          throw_input("bad .zattrs {}: multiscales[0] dataset {} has no 'path' string", file,
                      shown(d));
        if (d["path"].get<std::string>() == dataset_path && !dataset) dataset = &d;
      }
      if (dataset) {
        lay.ome = true;
        if (m.contains("axes")) {
          const json& ax = m["axes"];
          if (!ax.is_array() || ax.size() != ndim)
            throw_input(
                "bad .zattrs {}: multiscales axes {} must list {} axes (the array {} has {} "
                "dimensions)",
                file, shown(ax), ndim, zarray_file, ndim);
          for (const json& e : ax) {
            Axis x;
            if (e.is_string()) {  // NGFF 0.3: names only
              x.name = e.get<std::string>();
            } else if (e.is_object() && e.contains("name") && e["name"].is_string()) {
              x.name = e["name"].get<std::string>();
              if (e.contains("type") && e["type"].is_string())
                x.type = lower(e["type"].get<std::string>());
              if (e.contains("unit") && e["unit"].is_string())
                x.unit = e["unit"].get<std::string>();
            } else {
              throw_input("bad .zattrs {}: axis {} has no 'name'", file, shown(e));
            }
            axes.push_back(x);
          }
          have_axes = true;
        }
        // The dataset's scale, times the multiscale's own (NGFF 0.4 allows both).
        if (dataset->contains("coordinateTransformations"))
          scale = scale_of((*dataset)["coordinateTransformations"], ndim,
                           "dataset '" + printable(dataset_path) + "'", file);
        if (m.contains("coordinateTransformations")) {
          const auto global =
              scale_of(m["coordinateTransformations"], ndim, "multiscales[0]", file);
          for (size_t i = 0; i < ndim; ++i) scale[i] *= global[i];
        }
      }
    }
  }
  if (!have_axes) {
    // No axes: a plain 3D array is z, y, x; NGFF 0.1/0.2 images are 5D t, c, z, y, x.
    static const char* const k5[] = {"t", "c", "z", "y", "x"};
    if (ndim == 3 || ndim == 2 || (ndim == 5 && lay.ome)) {
      for (size_t i = 0; i < ndim; ++i) axes.push_back({k5[5 - ndim + i], "", ""});
    } else {
      std::string shape;
      for (size_t i = 0; i < ndim; ++i)
        shape += (i ? "x" : "") + std::to_string(lay.array.shape[i]);
      throw_input("{} has {} dimensions ({}) and no OME-Zarr axes to say which is z, y and x",
                  zarray_file, ndim, shape);
    }
  }

  // Roles: by type when the axis has one (NGFF 0.4), else by name.
  std::vector<Role> roles(ndim, Role::Other);
  for (size_t i = 0; i < ndim; ++i) {
    const std::string name = lower(axes[i].name), type = axes[i].type;
    Role r = Role::Other;
    if (type == "time" || (type.empty() && name == "t"))
      r = Role::Time;
    else if (type == "channel" || (type.empty() && name == "c"))
      r = Role::Channel;
    else if (type == "space" || type.empty())
      r = name == "z" ? Role::Z : name == "y" ? Role::Y : name == "x" ? Role::X : Role::Other;
    if (r == Role::Other && lay.array.shape[i] != 1)
      throw_input("bad .zattrs {}: axis '{}' (type '{}') of size {} is not one of t, c, z, y, x",
                  file, printable(axes[i].name), printable(axes[i].type), lay.array.shape[i]);
    int* slot = r == Role::Time      ? &lay.axis_t
                : r == Role::Channel ? &lay.axis_c
                : r == Role::Z       ? &lay.axis_z
                : r == Role::Y       ? &lay.axis_y
                : r == Role::X       ? &lay.axis_x
                                     : nullptr;
    if (!slot) continue;
    if (*slot >= 0) throw_input("bad .zattrs {}: two '{}' axes", file, printable(axes[i].name));
    *slot = static_cast<int>(i);
    roles[i] = r;
  }
  if (lay.axis_y < 0 || lay.axis_x < 0)
    throw_input("bad .zattrs {}: the axes have no y and x (space) axis", file);

  // Voxel size and unit from the spatial axes.
  const int spatial[3] = {lay.axis_z, lay.axis_y, lay.axis_x};
  double vs[3] = {1.0, 1.0, 1.0};
  std::string units[3];
  bool any_unit = false, all_known = true, non_unit_scale = false;
  for (int k = 0; k < 3; ++k) {
    if (spatial[k] < 0) continue;
    vs[k] = scale[static_cast<size_t>(spatial[k])];
    units[k] = axes[static_cast<size_t>(spatial[k])].unit;
    if (!units[k].empty()) any_unit = true;
    if (unit_to_micron(units[k]) <= 0) all_known = false;
    if (vs[k] != 1.0) non_unit_scale = true;
  }
  for (int k = 0; k < 3; ++k)
    if (lay.file_unit.empty() && !units[k].empty()) lay.file_unit = printable(units[k]);
  lay.voxel = {vs[0], vs[1], vs[2]};
  if (any_unit && all_known) {
    for (int k = 0; k < 3; ++k)
      if (spatial[k] >= 0) vs[k] = scale_to_micron(vs[k], unit_to_micron(units[k]));
    lay.voxel = {vs[0], vs[1], vs[2]};
    lay.unit = "micron";
    lay.calibrated = true;
  } else if (any_unit) {
    const bool same = (spatial[0] < 0 || units[0] == units[1]) && units[1] == units[2];
    if (same && !units[1].empty()) {
      log_warn("unknown unit '{}' of the axes in {}: voxel size kept in that unit",
               printable(units[1]), file);
      lay.unit = printable(units[1]);
      lay.calibrated = true;
    } else {
      log_warn(
          "the spatial axes of {} have units '{}', '{}', '{}': treating the image as uncalibrated",
          file, printable(units[0]), printable(units[1]), printable(units[2]));
      lay.voxel = {1.0, 1.0, 1.0};
    }
  } else if (non_unit_scale) {
    // A scale without a unit: not physical, but the anisotropy is known (as ImageJ's unit=pixel).
    lay.calibrated = true;
  }
  // Scales multiplied or converted out of the double range.
  for (double x : {lay.voxel.z, lay.voxel.y, lay.voxel.x})
    if (!(x > 0) || !std::isfinite(x))
      throw_input("bad .zattrs {}: voxel size {} x {} x {} {} (z, y, x) is out of range", file,
                  lay.voxel.z, lay.voxel.y, lay.voxel.x, lay.unit);
  return lay;
}

}  // namespace isoprompt::io
