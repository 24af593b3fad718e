#include "io/metadata.h"

#include <fmt/format.h>
#include <pugixml.hpp>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <sstream>

#include "isoprompt/checked.h"
#include "isoprompt/error.h"
#include "isoprompt/io.h"

namespace isoprompt {

double unit_to_micron(const std::string& unit_in) {
  std::string u;
  for (char c : unit_in)
    if (c != ' ') u += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  // micro sign in UTF-8 (C2 B5), Latin-1 (B5) and Greek mu (CE BC); ImageJ's \u00B5 escape.
  for (const char* mu : {"\xC2\xB5", "\xCE\xBC", "\\u00b5", "\xB5"}) {
    const auto pos = u.find(mu);
    if (pos == 0) u = "u" + u.substr(std::strlen(mu));
  }
  if (u == "um" || u == "micron" || u == "microns" || u == "micrometer" || u == "micrometre" ||
      u == "micrometers" || u == "micrometres")
    return 1.0;
  if (u == "nm" || u == "nanometer" || u == "nanometre" || u == "nanometers" || u == "nanometres") return 1e-3;
  if (u == "pm" || u == "picometer" || u == "picometre") return 1e-6;
  if (u == "\xC3\x85" || u == "\xE2\x84\xAB" || u == "\xC5" || u == "a" || u == "angstrom" || u == "angstroms")
    return 1e-4;
  if (u == "mm" || u == "millimeter" || u == "millimetre" || u == "millimeters" || u == "millimetres") return 1e3;
  if (u == "cm" || u == "centimeter" || u == "centimetre") return 1e4;
  if (u == "m" || u == "meter" || u == "metre") return 1e6;
  if (u == "inch" || u == "in" || u == "inches") return 25400.0;
  return 0.0;
}

double scale_to_micron(double value, double factor) {
  if (factor == 1.0 || !std::isfinite(value)) return value;
  const double e = std::log10(factor);
  if (std::fabs(e - std::round(e)) > 1e-9) return value * factor;
  // A power of ten: shift the decimal exponent of the shortest text of `value`, so that
  // 33.855 nm becomes the double nearest to 0.033855, not 33.855 * 0.001 (1 ulp off).
  std::string s = fmt::format("{}", value);
  int exp10 = static_cast<int>(std::lround(e));
  const auto epos = s.find_first_of("eE");
  if (epos != std::string::npos) {
    exp10 += std::atoi(s.c_str() + epos + 1);
    s.resize(epos);
  }
  return std::strtod(fmt::format("{}e{}", s, exp10).c_str(), nullptr);
}

namespace io {

std::string exact_number(double v) { return fmt::format("{}", v); }

std::string printable(const std::string& s) {
  // Valid UTF-8 is kept; other bytes >= 0x80 are taken as Latin-1 (as in older files
  // that write "\xB5m") and re-encoded; control characters become '?'.
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      out += (b < 0x20 || b == 0x7F) ? '?' : static_cast<char>(b);
      ++i;
      continue;
    }
    const size_t len = (b >= 0xC2 && b <= 0xDF) ? 2 : (b >= 0xE0 && b <= 0xEF) ? 3 : (b >= 0xF0 && b <= 0xF4) ? 4 : 0;
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) ok = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    if (ok) {
      out.append(s, i, len);
      i += len;
    } else {
      out += static_cast<char>(0xC0 | (b >> 6));
      out += static_cast<char>(0x80 | (b & 0x3F));
      ++i;
    }
  }
  return out;
}

double round_significant(double v, int digits) {
  if (!(v != 0) || !std::isfinite(v)) return v;
  // Through text, so the result is the double nearest to the rounded decimal.
  return std::strtod(fmt::format("{:.{}g}", v, digits).c_str(), nullptr);
}

namespace {

bool parse_double(const std::string& s, double& out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end == s.c_str()) return false;
  while (*end == ' ' || *end == '\t') ++end;
  if (*end != '\0') return false;
  out = v;
  return true;
}

bool parse_int(const std::string& s, int64_t& out) {
  double d;
  if (!parse_double(s, d) || d != std::floor(d) || d < 0 || d > 1e15) return false;
  out = static_cast<int64_t>(d);
  return true;
}

std::string trim(std::string s) {
  const auto b = s.find_first_not_of(" \t\r");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

// Resolves Java-style \uXXXX escapes (ImageJ writes "unit=\u00B5m") to UTF-8.
std::string unescape_java(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 5 < s.size() + 0 && (s[i + 1] == 'u' || s[i + 1] == 'U')) {
      const std::string hex = s.substr(i + 2, 4);
      char* end = nullptr;
      const long cp = std::strtol(hex.c_str(), &end, 16);
      if (end == hex.c_str() + 4) {
        if (cp < 0x80) {
          out += static_cast<char>(cp);
        } else if (cp < 0x800) {
          out += static_cast<char>(0xC0 | (cp >> 6));
          out += static_cast<char>(0x80 | (cp & 0x3F));
        } else {
          out += static_cast<char>(0xE0 | (cp >> 12));
          out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
          out += static_cast<char>(0x80 | (cp & 0x3F));
        }
        i += 5;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

}  // namespace

bool is_imagej_description(const std::string& d) { return d.rfind("ImageJ=", 0) == 0; }

ImageJMeta parse_imagej(const std::string& d, const std::string& path) {
  ImageJMeta m;
  size_t start = 0;
  while (start < d.size()) {
    size_t end = d.find('\n', start);
    if (end == std::string::npos) end = d.size();
    const std::string line = d.substr(start, end - start);
    start = end + 1;
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = printable(trim(line.substr(0, eq))), value = printable(trim(line.substr(eq + 1)));
    m.kv[key] = value;
    if (key.rfind("isoprompt.", 0) == 0 && key.size() > 10) m.notes.emplace_back(key.substr(10), value);
  }
  auto get_int = [&](const char* key, int64_t& out) {
    auto it = m.kv.find(key);
    if (it == m.kv.end()) return false;
    if (!parse_int(it->second, out) || out < 1)
      throw_input("bad ImageJ metadata in {}: {}={} is not a positive whole number", path, key, it->second);
    return true;
  };
  const bool has_images = get_int("images", m.images);
  get_int("channels", m.channels);
  const bool has_slices = get_int("slices", m.slices);
  get_int("frames", m.frames);
  if (!has_images) m.images = 0;  // filled in from the page count by the reader
  if (!has_slices) m.slices = 0;  // likewise: images / (channels * frames)
  auto sp = m.kv.find("spacing");
  if (sp != m.kv.end()) {
    if (!parse_double(sp->second, m.spacing) || !(m.spacing > 0) || !std::isfinite(m.spacing))
      throw_input("bad ImageJ metadata in {}: spacing={} is not a positive number", path, sp->second);
    m.has_spacing = true;
  }
  auto un = m.kv.find("unit");
  if (un != m.kv.end()) m.unit = printable(unescape_java(un->second));
  return m;
}

bool is_ome_description(const std::string& d) {
  const auto pos = d.find_first_not_of(" \t\r\n");
  return pos != std::string::npos && d.compare(pos, 1, "<") == 0 && d.find("<OME") != std::string::npos;
}

int64_t OmeMeta::ifd_of(int64_t z, int64_t c, int64_t t) const {
  const size_t i = static_cast<size_t>((t * size_c + c) * size_z + z);
  return i < plane_ifd.size() ? plane_ifd[i] : -1;
}

namespace {

// Linear plane index of (z, c, t) in a DimensionOrder such as "XYZCT" (XY fixed first).
int64_t order_index(const std::string& order, int64_t z, int64_t c, int64_t t, int64_t sz, int64_t sc,
                    int64_t st) {
  int64_t idx = 0, stride = 1;
  for (size_t k = 2; k < order.size(); ++k) {
    const char a = order[k];
    const int64_t pos = a == 'Z' ? z : a == 'C' ? c : t;
    const int64_t size = a == 'Z' ? sz : a == 'C' ? sc : st;
    idx += pos * stride;
    stride *= size;
  }
  return idx;
}

// Reverse of order_index: plane index -> (z, c, t).
void order_coords(const std::string& order, int64_t idx, int64_t sz, int64_t sc, int64_t st, int64_t& z,
                  int64_t& c, int64_t& t) {
  z = c = t = 0;
  for (size_t k = 2; k < order.size(); ++k) {
    const char a = order[k];
    const int64_t size = a == 'Z' ? sz : a == 'C' ? sc : st;
    const int64_t pos = idx % size;
    idx /= size;
    (a == 'Z' ? z : a == 'C' ? c : t) = pos;
  }
}

pugi::xml_node child_local(const pugi::xml_node& n, const char* local) {
  for (auto c : n.children()) {
    const char* name = c.name();
    const char* colon = std::strrchr(name, ':');
    if (std::strcmp(colon ? colon + 1 : name, local) == 0) return c;
  }
  return {};
}

}  // namespace

OmeMeta parse_ome(const std::string& xml, const std::string& path, int64_t n_pages) {
  pugi::xml_document doc;
  const auto res = doc.load_buffer(xml.data(), xml.size());
  if (!res) throw_input("bad OME-XML in {}: {} at offset {}", path, res.description(), res.offset);
  const pugi::xml_node ome = child_local(doc, "OME");
  if (!ome) throw_input("bad OME-XML in {}: no OME element", path);
  const pugi::xml_node image = child_local(ome, "Image");
  const pugi::xml_node pixels = child_local(image, "Pixels");
  if (!pixels) throw_input("bad OME-XML in {}: no Image/Pixels element", path);
  OmeMeta m;
  m.n_images = 0;
  for (auto c : ome.children()) {
    const char* colon = std::strrchr(c.name(), ':');
    if (std::strcmp(colon ? colon + 1 : c.name(), "Image") == 0) ++m.n_images;
  }
  auto get_size = [&](const char* key, int64_t& out, bool required) {
    const auto a = pixels.attribute(key);
    if (!a) {
      if (required) throw_input("bad OME-XML in {}: Pixels has no {}", path, key);
      return;
    }
    if (!parse_int(a.value(), out) || out < 1)
      throw_input("bad OME-XML in {}: {}=\"{}\" is not a positive whole number", path, key, printable(a.value()));
  };
  get_size("SizeX", m.size_x, true);
  get_size("SizeY", m.size_y, true);
  get_size("SizeZ", m.size_z, false);
  get_size("SizeC", m.size_c, false);
  get_size("SizeT", m.size_time, false);
  // Each size is at most 1e15 (parse_int), but their product can overflow.
  const auto planes = checked_product({m.size_z, m.size_c, m.size_time});
  if (!planes)
    throw_input("bad OME-XML in {}: SizeZ x SizeC x SizeT = {} x {} x {} planes is implausible", path, m.size_z,
                m.size_c, m.size_time);
  if (*planes > n_pages)
    throw_input("OME-TIFF {} refers to {} planes ({} z x {} c x {} t) but has only {} pages in this file "
                "(multi-file OME-TIFF is not supported)",
                path, *planes, m.size_z, m.size_c, m.size_time, n_pages);
  m.dimension_order = printable(pixels.attribute("DimensionOrder").as_string("XYZCT"));
  {
    std::string o = m.dimension_order;
    std::string sorted = o;
    std::sort(sorted.begin(), sorted.end());
    if (o.size() != 5 || o.compare(0, 2, "XY") != 0 || sorted != "CTXYZ")
      throw_input("bad OME-XML in {}: DimensionOrder=\"{}\" is not one of XYZCT, XYZTC, XYCZT, ...", path, o);
  }
  m.type = printable(pixels.attribute("Type").as_string());
  const char* keys[3] = {"PhysicalSizeZ", "PhysicalSizeY", "PhysicalSizeX"};
  for (int i = 0; i < 3; ++i) {
    const auto a = pixels.attribute(keys[i]);
    if (!a) continue;
    double v;
    if (!parse_double(a.value(), v) || !(v > 0) || !std::isfinite(v))
      throw_input("bad OME-XML in {}: {}=\"{}\" is not a positive number", path, keys[i], printable(a.value()));
    m.phys[i] = v;
    m.phys_unit[i] = printable(pixels.attribute((std::string(keys[i]) + "Unit").c_str()).as_string());
  }
  // isoprompt's own provenance notes (ome_description), for `info`.
  for (auto sa : ome.children())
    if (std::strcmp(sa.name(), "StructuredAnnotations") == 0)
      for (auto map : sa.children("MapAnnotation"))
        if (std::strcmp(map.attribute("Namespace").as_string(), "isoprompt") == 0)
          for (auto kv : map.child("Value").children("M"))
            m.notes.emplace_back(printable(kv.attribute("K").as_string()), printable(kv.text().as_string()));

  // Plane -> IFD map. Without TiffData, planes are stored in DimensionOrder, one per IFD.
  const int64_t n_planes = *planes;
  m.plane_ifd.assign(static_cast<size_t>(n_planes), -1);
  bool any_tiffdata = false;
  for (auto td : pixels.children()) {
    const char* name = td.name();
    const char* colon = std::strrchr(name, ':');
    if (std::strcmp(colon ? colon + 1 : name, "TiffData") != 0) continue;
    any_tiffdata = true;
    // A TiffData that points into another file (UUID FileName) is not in this one.
    const pugi::xml_node uuid = child_local(td, "UUID");
    if (uuid && uuid.attribute("FileName")) continue;
    const int64_t ifd = td.attribute("IFD").as_llong(0);
    const int64_t fz = td.attribute("FirstZ").as_llong(0), fc = td.attribute("FirstC").as_llong(0),
                  ft = td.attribute("FirstT").as_llong(0);
    int64_t count = td.attribute("PlaneCount").as_llong(0);
    const bool has_first = td.attribute("FirstZ") || td.attribute("FirstC") || td.attribute("FirstT");
    if (count <= 0) count = (td.attribute("IFD") || has_first) ? 1 : n_planes;
    if (ifd < 0 || !checked_add(ifd, count) || count > n_planes)
      throw_input("bad OME-XML in {}: TiffData IFD={} PlaneCount={} is out of range", path, ifd, count);
    if (fz < 0 || fz >= m.size_z || fc < 0 || fc >= m.size_c || ft < 0 || ft >= m.size_time)
      throw_input("bad OME-XML in {}: TiffData FirstZ={} FirstC={} FirstT={} is outside SizeZ={} SizeC={} SizeT={}",
                  path, fz, fc, ft, m.size_z, m.size_c, m.size_time);
    const int64_t first = order_index(m.dimension_order, fz, fc, ft, m.size_z, m.size_c, m.size_time);
    for (int64_t k = 0; k < count && first + k < n_planes; ++k) {
      int64_t z, c, t;
      order_coords(m.dimension_order, first + k, m.size_z, m.size_c, m.size_time, z, c, t);
      m.plane_ifd[static_cast<size_t>((t * m.size_c + c) * m.size_z + z)] = ifd + k;
    }
  }
  if (!any_tiffdata) {
    for (int64_t i = 0; i < n_planes; ++i) {
      int64_t z, c, t;
      order_coords(m.dimension_order, i, m.size_z, m.size_c, m.size_time, z, c, t);
      m.plane_ifd[static_cast<size_t>((t * m.size_c + c) * m.size_z + z)] = i;
    }
  }
  return m;
}

namespace {

const char kNotePrefix[] = "isoprompt.";
const char kNoteNamespace[] = "isoprompt";

// A note as it may be written: keys are checked (a programming error otherwise); in values,
// line breaks (which end an ImageJ description line) become spaces and '=' becomes ':'
// (tifffile drops a description line with two '=').
std::pair<std::string, std::string> clean_note(const std::pair<std::string, std::string>& n) {
  if (n.first.empty() || n.first.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_") !=
                             std::string::npos)
    throw std::logic_error("bad file note key '" + n.first + "'");
  std::string v = n.second;
  for (char& c : v)
    if (c == '\n' || c == '\r')
      c = ' ';
    else if (c == '=')
      c = ':';
  return {n.first, v};
}

}  // namespace

VolumeMeta volume_meta(const Volume& v) {
  return {v.shape(), v.dtype(), v.voxel_size(), v.unit()};
}

std::string imagej_description(const VolumeMeta& v, double min_value, double max_value,
                               const FileNotes& notes) {
  std::string d = "ImageJ=1.11a\n";
  const bool calibrated = unit_to_micron(v.unit) > 0;
  if (v.shape.z > 1) d += fmt::format("images={}\nslices={}\n", v.shape.z, v.shape.z);
  if (calibrated) {
    // ImageJ reads its unit from here and the pixel width from X/YResolution (stored as
    // float rationals); xspacing/yspacing carry the exact values for readers that know them.
    d += "unit=micron\n";
    const double f = unit_to_micron(v.unit);
    d += fmt::format("spacing={}\n", exact_number(scale_to_micron(v.voxel.z, f)));
    d += fmt::format("xspacing={}\nyspacing={}\n", exact_number(scale_to_micron(v.voxel.x, f)),
                     exact_number(scale_to_micron(v.voxel.y, f)));
  } else if (v.unit == "pixel" && !(v.voxel == VoxelSize{1.0, 1.0, 1.0})) {
    // A voxel size in pixels (simulate on an uncalibrated stack: z step K): no physical
    // unit, but the anisotropy is known and must survive (`--factor auto` reads it).
    d += fmt::format("unit=pixel\nspacing={}\nxspacing={}\nyspacing={}\n", exact_number(v.voxel.z),
                     exact_number(v.voxel.x), exact_number(v.voxel.y));
  }
  if (v.shape.z > 1) d += "loop=false\n";
  if (v.dtype == DType::F32 && std::isfinite(min_value) && std::isfinite(max_value))
    d += fmt::format("min={}\nmax={}\n", exact_number(min_value), exact_number(max_value));
  for (const auto& n : notes) {
    const auto [key, value] = clean_note(n);
    d += fmt::format("{}{}={}\n", kNotePrefix, key, value);
  }
  return d;
}

std::string ome_description(const VolumeMeta& v, const std::string& name, const FileNotes& notes) {
  pugi::xml_document doc;
  auto decl = doc.append_child(pugi::node_declaration);
  decl.append_attribute("version") = "1.0";
  decl.append_attribute("encoding") = "UTF-8";
  auto ome = doc.append_child("OME");
  ome.append_attribute("xmlns") = "http://www.openmicroscopy.org/Schemas/OME/2016-06";
  ome.append_attribute("xmlns:xsi") = "http://www.w3.org/2001/XMLSchema-instance";
  ome.append_attribute("xsi:schemaLocation") =
      "http://www.openmicroscopy.org/Schemas/OME/2016-06 "
      "http://www.openmicroscopy.org/Schemas/OME/2016-06/ome.xsd";
  ome.append_attribute("Creator") = (std::string("isoprompt ") + ISOPROMPT_VERSION).c_str();
  auto image = ome.append_child("Image");
  image.append_attribute("ID") = "Image:0";
  image.append_attribute("Name") = name.c_str();
  auto px = image.append_child("Pixels");
  px.append_attribute("ID") = "Pixels:0";
  px.append_attribute("DimensionOrder") = "XYZCT";
  const char* type = v.dtype == DType::U8 ? "uint8" : v.dtype == DType::U16 ? "uint16" : "float";
  px.append_attribute("Type") = type;
  px.append_attribute("SignificantBits") = static_cast<int>(dtype_size(v.dtype) * 8);
  px.append_attribute("Interleaved") = "false";
  px.append_attribute("BigEndian") = "false";
  px.append_attribute("SizeX") = static_cast<long long>(v.shape.x);
  px.append_attribute("SizeY") = static_cast<long long>(v.shape.y);
  px.append_attribute("SizeZ") = static_cast<long long>(v.shape.z);
  px.append_attribute("SizeC") = 1;
  px.append_attribute("SizeT") = 1;
  const double f = unit_to_micron(v.unit);
  if (f > 0) {
    // Micrometres are the schema's default unit; the unit is written anyway, as UTF-8
    // "µm" like Bio-Formats does.
    const std::string um = "\xC2\xB5m";
    px.append_attribute("PhysicalSizeX") = exact_number(scale_to_micron(v.voxel.x, f)).c_str();
    px.append_attribute("PhysicalSizeXUnit") = um.c_str();
    px.append_attribute("PhysicalSizeY") = exact_number(scale_to_micron(v.voxel.y, f)).c_str();
    px.append_attribute("PhysicalSizeYUnit") = um.c_str();
    px.append_attribute("PhysicalSizeZ") = exact_number(scale_to_micron(v.voxel.z, f)).c_str();
    px.append_attribute("PhysicalSizeZUnit") = um.c_str();
  }
  auto ch = px.append_child("Channel");
  ch.append_attribute("ID") = "Channel:0:0";
  ch.append_attribute("SamplesPerPixel") = 1;
  ch.append_child("LightPath");
  auto td = px.append_child("TiffData");
  td.append_attribute("IFD") = 0;
  td.append_attribute("PlaneCount") = static_cast<long long>(v.shape.z);
  if (!notes.empty()) {
    // OME's place for key-value metadata; Bio-Formats shows it in Fiji's "Show Info".
    image.append_child("AnnotationRef").append_attribute("ID") = "Annotation:isoprompt";
    auto map = ome.append_child("StructuredAnnotations").append_child("MapAnnotation");
    map.append_attribute("ID") = "Annotation:isoprompt";
    map.append_attribute("Namespace") = kNoteNamespace;
    auto value = map.append_child("Value");
    for (const auto& n : notes) {
      const auto [key, text] = clean_note(n);
      auto m = value.append_child("M");
      m.append_attribute("K") = key.c_str();
      m.text() = text.c_str();
    }
  }
  std::ostringstream os;
  doc.save(os, "  ", pugi::format_default, pugi::encoding_utf8);
  return os.str();
}

}  // namespace io
}  // namespace isoprompt
