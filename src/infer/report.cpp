// QC report: numbers (self-consistency, ground-truth scores), orthogonal views as PNG data
// URLs, z profiles and the tuning curve as inline SVG, all in one HTML string.
#include "isoprompt/report.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>

#include "isoprompt/error.h"
#include "isoprompt/fileutil.h"
#include "isoprompt/metrics.h"
#include "isoprompt/stats.h"

namespace isoprompt {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Panels wider or taller than this are shown binned (area average), so a 2k x 2k stack
// gives a report of a few MB instead of tens; the caption says so.
constexpr int64_t kMaxPanelPx = 1024;

// ---- Numbers ---------------------------------------------------------------------------

Volume as_f32(const Volume& v) { return v.dtype() == DType::F32 ? v : v.astype(DType::F32); }

Volume first_planes(const Volume& v, int64_t nz) {
  return nz == v.nz() ? v : crop(v, {0, 0, 0}, {nz, v.ny(), v.nx()});
}

// `range` -> [0, 1], clipped: how the PSNRs here are taken (as `eval` does with a GT).
Volume unit_scaled(const Volume& v, const Normalizer& range) {
  Volume out = normalize(v, range);
  clip_inplace(out, 0.f, 1.f);
  return out;
}

double psnr_unit(const Volume& ref, const Volume& other, const Normalizer& range) {
  return psnr(unit_scaled(ref, range), unit_scaled(other, range), 1.0);
}

// PSNR(degrade(iso), input) over the planes both have; `planes` receives their count.
double redegraded_psnr_counted(const Volume& input, const Volume& iso, const DegradeParams& p,
                               const Normalizer& range, int64_t* planes) {
  const Volume redegraded = degrade(as_f32(iso), 0, p);
  // A fractional K, or an output one plane short, leaves fewer whole K-blocks than input
  // planes: compare the planes both have (the grids start at the same face).
  const int64_t nz = std::min(input.nz(), redegraded.nz());
  if (nz < 1) throw_input("report: the restored volume has fewer than {} planes: nothing to re-degrade", p.factor);
  if (planes) *planes = nz;
  return psnr_unit(first_planes(as_f32(input), nz), first_planes(redegraded, nz), range);
}

// sum |L * plane| over the interior of one XY plane of a float32 volume.
double laplacian_difference_sum(const Volume& unit, int64_t z) {
  const int64_t ny = unit.ny(), nx = unit.nx();
  const float* p = unit.data<float>() + z * ny * nx;
  double sum = 0;
  for (int64_t y = 1; y + 1 < ny; ++y)
    for (int64_t x = 1; x + 1 < nx; ++x) {
      auto at = [&](int64_t dy, int64_t dx) { return double(p[(y + dy) * nx + x + dx]); };
      const double c = at(-1, -1) + at(-1, 1) + at(1, -1) + at(1, 1) -
                       2.0 * (at(-1, 0) + at(1, 0) + at(0, -1) + at(0, 1)) + 4.0 * at(0, 0);
      sum += std::abs(c);
    }
  return sum;
}

// What the report computes before drawing: the metrics and the interpolated input.
struct Prepared {
  ReportMetrics metrics;
  Volume interpolated;  // input upsampled along z onto the output grid, float32
};

void check_inputs(const ReportInputs& in) {
  if (!in.input || !in.output || in.input->empty() || in.output->empty())
    throw_input("report: the input stack and the restored volume are both needed");
  if (!(in.factor >= 1) || !std::isfinite(in.factor))
    throw_input("report: the z factor must be a number >= 1, got {}", in.factor);
  const Volume& a = *in.input;
  const Volume& o = *in.output;
  if (a.ny() != o.ny() || a.nx() != o.nx())
    throw_input("report: the restored volume is {} but the input is {}: y and x must be the same",
                to_string(o.shape()), to_string(a.shape()));
  const int64_t expect = std::llround(static_cast<double>(a.nz()) * in.factor);
  if (std::abs(o.nz() - expect) > 1)
    throw_input(
        "report: the restored volume has {} planes, but {} input planes x factor {} = {}: is the "
        "factor right?",
        o.nz(), a.nz(), in.factor, expect);
  if (in.uncertainty && in.uncertainty->shape() != o.shape())
    throw_input("report: the uncertainty map is {} but the restored volume is {}",
                to_string(in.uncertainty->shape()), to_string(o.shape()));
  if (in.ground_truth && (in.ground_truth->ny() != o.ny() || in.ground_truth->nx() != o.nx()))
    throw_input("report: the ground truth is {} but the restored volume is {}: y and x must be the same",
                to_string(in.ground_truth->shape()), to_string(o.shape()));
  if (in.uncertainty_restorations < 2)
    throw_input("report: an uncertainty map needs at least 2 restorations per voxel, got {}",
                in.uncertainty_restorations);
}

DegradeParams noiseless(const ReportInputs& in) {
  DegradeParams p = in.degrade;
  p.factor = in.factor;
  p.poisson_peak = 0;  // the check compares the model's mean, never a noise draw
  p.gaussian_sigma = 0;
  return p;
}

Prepared prepare(const ReportInputs& in) {
  check_inputs(in);
  Prepared pr;
  ReportMetrics& m = pr.metrics;
  const Volume input = as_f32(*in.input);
  const Volume output = as_f32(*in.output);
  pr.interpolated = upsample(input, 0, in.factor, in.interp, output.nz());

  const Normalizer display = percentile_normalizer(output, 0.1, 99.9);
  m.display_lo = display.lo;
  m.display_hi = display.hi > display.lo ? display.hi : display.lo + 1;  // a constant output stays visible

  SelfConsistency& s = m.self;
  s.range = percentile_normalizer(input, 0.1, 99.9);
  if (!(s.range.hi > s.range.lo)) s.range.hi = s.range.lo + 1;  // constant input: any unit range
  const DegradeParams p = noiseless(in);
  s.output_psnr = redegraded_psnr_counted(input, output, p, s.range, &s.planes_compared);
  s.interp_psnr = redegraded_psnr_counted(input, pr.interpolated, p, s.range, nullptr);
  s.output_vs_interp_psnr = psnr_unit(pr.interpolated, output, s.range);
  s.input_noise_sigma = estimate_noise_sigma(input, s.range);
  s.noise_floor_psnr = s.input_noise_sigma > 0 ? -20.0 * std::log10(s.input_noise_sigma) : kInf;

  if (in.uncertainty) {
    const Volume u = as_f32(*in.uncertainty);
    const IntensityStats st = intensity_stats(u);
    s.uncertainty_mean = st.mean;
    const std::vector<double> q = percentiles(u, {99.0, 99.9});
    s.uncertainty_p99 = q[0];
    m.map_hi = q[1] > 0 ? q[1] : (st.max > 0 ? st.max : 1.0);
    if (in.uncertainty_restorations == 2) {
      // Two restorations: u = |xz - yz| / 2, so mean((xz - yz)^2) = 4 mean(u^2), taken on
      // the output's display range as the data range.
      const double mean_u2 = st.std * st.std + st.mean * st.mean;
      const double range = m.display_hi - m.display_lo;
      s.xz_yz_psnr = mean_u2 > 0 ? 10.0 * std::log10(range * range / (4.0 * mean_u2)) : kInf;
    }
  }

  if (in.ground_truth) {
    const Volume gt = as_f32(*in.ground_truth);
    EvalOptions o;
    o.crop_to_gt = true;
    o.per_orientation = false;
    o.ms_ssim_scales = 1;  // not shown; one scale spares the work and the log line
    const EvalReport ro = evaluate(gt, output, o);
    const EvalReport ri = evaluate(gt, pr.interpolated, o);
    m.gt.available = true;
    m.gt.output_psnr = ro.overall.psnr;
    m.gt.output_ssim = ro.overall.ssim;
    m.gt.interp_psnr = ri.overall.psnr;
    m.gt.interp_ssim = ri.overall.ssim;
  }
  return pr;
}

// ---- PNG (zlib-compressed; the report is meant to be mailed around) --------------------

void put32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<uint8_t>(v >> s));
}

void png_chunk(std::vector<uint8_t>& out, const char* type, const std::vector<uint8_t>& data) {
  put32(out, static_cast<uint32_t>(data.size()));
  const size_t start = out.size();
  out.insert(out.end(), type, type + 4);
  out.insert(out.end(), data.begin(), data.end());
  const uLong crc = crc32(0L, out.data() + start, static_cast<uInt>(out.size() - start));
  put32(out, static_cast<uint32_t>(crc));
}

// channels 1 = gray, 3 = RGB; pixels row-major, interleaved.
std::vector<uint8_t> encode_png(const std::vector<uint8_t>& pixels, int64_t width, int64_t height, int channels) {
  const size_t row = static_cast<size_t>(width) * channels;
  std::vector<uint8_t> raw;
  raw.reserve((row + 1) * static_cast<size_t>(height));
  for (int64_t y = 0; y < height; ++y) {
    raw.push_back(0);  // filter: none
    raw.insert(raw.end(), pixels.begin() + static_cast<std::ptrdiff_t>(y * row),
               pixels.begin() + static_cast<std::ptrdiff_t>((y + 1) * row));
  }
  uLongf zlen = compressBound(static_cast<uLong>(raw.size()));
  std::vector<uint8_t> z(zlen);
  if (compress2(z.data(), &zlen, raw.data(), static_cast<uLong>(raw.size()), 6) != Z_OK)
    throw_error("report: zlib could not compress a {}x{} image", width, height);
  z.resize(zlen);
  std::vector<uint8_t> png{0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  std::vector<uint8_t> ihdr;
  put32(ihdr, static_cast<uint32_t>(width));
  put32(ihdr, static_cast<uint32_t>(height));
  ihdr.insert(ihdr.end(), {8, static_cast<uint8_t>(channels == 3 ? 2 : 0), 0, 0, 0});
  png_chunk(png, "IHDR", ihdr);
  png_chunk(png, "IDAT", z);
  png_chunk(png, "IEND", {});
  return png;
}

// ---- Panels ----------------------------------------------------------------------------

// One orthogonal section as floats, binned by `bin` x `bin` (area average over the voxels
// that exist at the far edges).
struct Panel {
  int64_t rows = 0, cols = 0;
  std::vector<float> values;
};

Panel section(const Volume& v, Plane plane, int64_t index, int64_t bin) {
  const int64_t rows = plane == Plane::XY ? v.ny() : v.nz();
  const int64_t cols = plane == Plane::YZ ? v.ny() : v.nx();
  index = std::clamp<int64_t>(index, 0, v.plane_count(plane) - 1);
  Panel p;
  p.rows = (rows + bin - 1) / bin;
  p.cols = (cols + bin - 1) / bin;
  std::vector<double> sum(static_cast<size_t>(p.rows * p.cols), 0.0);
  std::vector<int64_t> n(sum.size(), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const int64_t z = plane == Plane::XY ? index : r;
      const int64_t y = plane == Plane::XY ? r : plane == Plane::XZ ? index : c;
      const int64_t x = plane == Plane::YZ ? index : c;
      const double val = voxel_as_float(v, (z * v.ny() + y) * v.nx() + x);
      if (!std::isfinite(val)) continue;
      const size_t k = static_cast<size_t>((r / bin) * p.cols + c / bin);
      sum[k] += val;
      ++n[k];
    }
  p.values.resize(sum.size());
  for (size_t k = 0; k < sum.size(); ++k)
    p.values[k] = n[k] ? static_cast<float>(sum[k] / double(n[k])) : std::numeric_limits<float>::quiet_NaN();
  return p;
}

uint8_t to_byte(double t) {  // t in [0, 1] (clipped); NaN -> 0
  if (!(t > 0)) return 0;
  return static_cast<uint8_t>(std::lround(std::min(1.0, t) * 255.0));
}

std::vector<uint8_t> gray_pixels(const Panel& p, double lo, double hi) {
  std::vector<uint8_t> px(p.values.size());
  const double scale = hi > lo ? 1.0 / (hi - lo) : 0.0;
  for (size_t k = 0; k < px.size(); ++k) px[k] = to_byte((p.values[k] - lo) * scale);
  return px;
}

// Viridis (matplotlib's perceptually uniform map, readable in gray and by colour-blind
// readers), sampled at 9 stops and interpolated linearly.
std::array<uint8_t, 3> viridis(double t) {
  static const uint8_t stops[9][3] = {{68, 1, 84},    {71, 45, 123},  {59, 82, 139},  {44, 114, 142}, {33, 145, 140},
                                      {40, 174, 128}, {94, 201, 98},  {173, 220, 48}, {253, 231, 37}};
  if (!(t > 0)) t = 0;
  t = std::min(1.0, t) * 8.0;
  const int i = std::min(7, static_cast<int>(t));
  const double f = t - i;
  std::array<uint8_t, 3> c{};
  for (int k = 0; k < 3; ++k)
    c[k] = static_cast<uint8_t>(std::lround(stops[i][k] + f * (stops[i + 1][k] - stops[i][k])));
  return c;
}

std::vector<uint8_t> colour_pixels(const Panel& p, double hi) {
  std::vector<uint8_t> px(p.values.size() * 3);
  for (size_t k = 0; k < p.values.size(); ++k) {
    const auto c = viridis(hi > 0 ? p.values[k] / hi : 0.0);
    std::copy(c.begin(), c.end(), px.begin() + static_cast<std::ptrdiff_t>(3 * k));
  }
  return px;
}

// ---- HTML helpers ----------------------------------------------------------------------

std::string escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Numbers as the report shows them: never "nan" or "inf".
std::string num(double v, int digits = 4) {
  if (std::isnan(v)) return "n/a";
  if (std::isinf(v)) return v > 0 ? "&infin;" : "&minus;&infin;";
  return fmt::format("{:.{}g}", v, digits);
}
std::string db(double v) {
  if (std::isnan(v)) return "n/a";
  if (std::isinf(v)) return v > 0 ? "&infin; (identical)" : "&minus;&infin;";
  return fmt::format("{:.2f} dB", v);
}
// Coordinates in SVG: fixed decimals, finite by construction.
std::string coord(double v) { return fmt::format("{:.1f}", v); }

std::string png_img(const std::vector<uint8_t>& png, const std::string& alt, const std::string& style) {
  return fmt::format("<img src=\"data:image/png;base64,{}\" alt=\"{}\" style=\"{}\">", base64_encode(png),
                     escape(alt), style);
}

std::string table(const std::vector<std::pair<std::string, std::string>>& rows, bool escape_values = true) {
  std::string s = "<table class=\"kv\">\n";
  for (const auto& [k, v] : rows)
    s += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", escape(k), escape_values ? escape(v) : v);
  return s + "</table>\n";
}

// ---- SVG plots -------------------------------------------------------------------------

struct Series {
  std::string name, colour;
  std::vector<std::pair<double, double>> points;
  bool line = true, markers = false, dashed = false;
};
struct RefLine {
  std::string name, colour;
  double y = 0;
};
struct PlotSpec {
  std::string x_label, y_label;
  std::vector<Series> series;
  std::vector<RefLine> refs;
  bool log_y = false;
  int width = 560, height = 300;
};

// About 5 round tick values covering [lo, hi].
std::vector<double> nice_ticks(double lo, double hi) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / 5.0;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> t;
  for (double v = std::ceil(lo / step - 1e-9) * step; v <= hi + 1e-9 * step; v += step)
    t.push_back(std::abs(v) < 1e-12 * step ? 0.0 : v);
  return t;
}

// Ticks of a log axis, as log10 values in [lo, hi]: the decades, and 2 and 5 times them
// when the axis spans less than two decades.
std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> t;
  const bool fine = hi - lo < 2.0;
  for (double d = std::floor(lo); d <= std::ceil(hi); d += 1.0)
    for (double m : {1.0, 2.0, 5.0}) {
      if (m != 1.0 && !fine) continue;
      const double v = d + std::log10(m);
      if (v >= lo - 1e-9 && v <= hi + 1e-9) t.push_back(v);
    }
  return t;
}

std::string svg_plot(const PlotSpec& spec) {
  const double W = spec.width, H = spec.height;
  const double left = 62, right = 14, top = 34, bottom = 44;
  const double pw = W - left - right, ph = H - top - bottom;
  auto ty = [&](double y) { return spec.log_y ? std::log10(y) : y; };
  double x0 = kInf, x1 = -kInf, y0 = kInf, y1 = -kInf;
  for (const auto& s : spec.series)
    for (const auto& [x, y] : s.points) {
      if (!std::isfinite(x) || !std::isfinite(y) || (spec.log_y && !(y > 0))) continue;
      x0 = std::min(x0, x), x1 = std::max(x1, x);
      y0 = std::min(y0, ty(y)), y1 = std::max(y1, ty(y));
    }
  for (const auto& r : spec.refs)
    if (std::isfinite(r.y) && (!spec.log_y || r.y > 0)) y0 = std::min(y0, ty(r.y)), y1 = std::max(y1, ty(r.y));
  if (!(x1 >= x0)) x0 = 0, x1 = 1;
  if (!(y1 >= y0)) y0 = 0, y1 = 1;
  if (x1 == x0) x0 -= 0.5, x1 += 0.5;
  if (y1 == y0) y0 -= 0.5, y1 += 0.5;
  const double pad = 0.06 * (y1 - y0);
  y0 -= pad, y1 += pad;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + (1.0 - (ty(y) - y0) / (y1 - y0)) * ph; };

  std::string s = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {0} {1}\" class=\"plot\" style=\"max-width: {0}px\" "
      "role=\"img\">\n",
      W, H);
  s += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fff\" stroke=\"#bbb\"/>\n", coord(left),
                   coord(top), coord(pw), coord(ph));
  // Axes ticks and grid.
  for (double t : nice_ticks(x0, x1)) {
    const double x = px(t);
    s += fmt::format("<line x1=\"{0}\" x2=\"{0}\" y1=\"{1}\" y2=\"{2}\" stroke=\"#eee\"/>", coord(x), coord(top),
                     coord(top + ph));
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"tick\">{}</text>\n", coord(x),
                     coord(top + ph + 15), num(t, 5));
  }
  for (double t : spec.log_y ? log_ticks(y0, y1) : nice_ticks(y0, y1)) {
    const double y = top + (1.0 - (t - y0) / (y1 - y0)) * ph;
    s += fmt::format("<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"#eee\"/>", coord(left),
                     coord(left + pw), coord(y));
    s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"tick\">{}</text>\n", coord(left - 5),
                     coord(y + 4), num(spec.log_y ? std::pow(10.0, t) : t, 4));
  }
  s += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" class=\"axis\">{}</text>\n", coord(left + pw / 2),
                   coord(H - 8), escape(spec.x_label));
  s += fmt::format(
      "<text x=\"14\" y=\"{0}\" text-anchor=\"middle\" class=\"axis\" transform=\"rotate(-90 14 {0})\">{1}</text>\n",
      coord(top + ph / 2), escape(spec.y_label + (spec.log_y ? " (log)" : "")));
  // Reference lines, then the series on top.
  for (const auto& r : spec.refs) {
    if (!std::isfinite(r.y) || (spec.log_y && !(r.y > 0))) continue;
    s += fmt::format(
        "<line x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\" stroke=\"{3}\" stroke-width=\"1.5\" "
        "stroke-dasharray=\"6 4\"/>\n",
        coord(left), coord(left + pw), coord(py(r.y)), r.colour);
  }
  for (const auto& se : spec.series) {
    std::string path;
    for (const auto& [x, y] : se.points) {
      if (!std::isfinite(x) || !std::isfinite(y) || (spec.log_y && !(y > 0))) continue;
      path += fmt::format("{}{},{}", path.empty() ? "M" : " L", coord(px(x)), coord(py(y)));
    }
    if (se.line && !path.empty())
      s += fmt::format("<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\"{}/>\n", path, se.colour,
                       se.dashed ? " stroke-dasharray=\"5 3\"" : "");
    if (se.markers)
      for (const auto& [x, y] : se.points) {
        if (!std::isfinite(x) || !std::isfinite(y) || (spec.log_y && !(y > 0))) continue;
        s += fmt::format("<circle cx=\"{}\" cy=\"{}\" r=\"3\" fill=\"{}\"/>", coord(px(x)), coord(py(y)), se.colour);
      }
  }
  // Legend along the top, left to right (about 6.5 px per character at 12 px).
  double lx = left;
  auto legend = [&](const std::string& name, const std::string& colour, bool dashed, bool marker_only) {
    if (marker_only)
      s += fmt::format("<circle cx=\"{}\" cy=\"14\" r=\"3\" fill=\"{}\"/>", coord(lx + 10), colour);
    else
      s += fmt::format("<line x1=\"{}\" x2=\"{}\" y1=\"14\" y2=\"14\" stroke=\"{}\" stroke-width=\"2\"{}/>", coord(lx),
                       coord(lx + 20), colour, dashed ? " stroke-dasharray=\"6 4\"" : "");
    s += fmt::format("<text x=\"{}\" y=\"18\" class=\"legend\">{}</text>\n", coord(lx + 25), escape(name));
    lx += 25 + 6.5 * static_cast<double>(name.size()) + 16;
  };
  for (const auto& se : spec.series) legend(se.name, se.colour, se.dashed, se.markers && !se.line);
  for (const auto& r : spec.refs)
    if (std::isfinite(r.y)) legend(r.name, r.colour, true, false);
  return s + "</svg>\n";
}

// ---- The document ----------------------------------------------------------------------

// Okabe-Ito colours: distinguishable with every common colour-vision deficiency.
constexpr const char* kBlue = "#0072B2";
constexpr const char* kOrange = "#E69F00";
constexpr const char* kVermillion = "#D55E00";
constexpr const char* kGreen = "#009E73";
constexpr const char* kBlack = "#222222";

constexpr const char* kStyle = R"(
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; background: #f4f5f7; color: #1d1f23; line-height: 1.45; font-size: 15px; }
main { max-width: 1180px; margin: 0 auto; padding: 18px 24px 40px; }
header h1 { font-size: 1.45em; margin: 0.2em 0 0.1em; word-break: break-all; }
header p { margin: 0; color: #555; }
section { background: #fff; border: 1px solid #dde0e5; border-radius: 8px; padding: 12px 18px 16px;
          margin-top: 16px; }
h2 { font-size: 1.12em; margin: 0.2em 0 0.6em; }
p.note { color: #555; font-size: 0.9em; margin: 0.4em 0; }
table { border-collapse: collapse; font-size: 0.92em; }
table.kv th { text-align: left; font-weight: 600; padding: 3px 18px 3px 0; vertical-align: top;
              white-space: nowrap; }
table.kv td { padding: 3px 0; word-break: break-all; font-variant-numeric: tabular-nums; }
table.scores th, table.scores td { padding: 4px 14px 4px 0; text-align: right; font-variant-numeric: tabular-nums; }
table.scores th:first-child, table.scores td:first-child { text-align: left; }
table.scores thead th { border-bottom: 1px solid #ccc; }
.verdict { padding: 8px 12px; border-radius: 6px; margin: 8px 0 4px; }
.better { background: #e6f4ea; border-left: 4px solid #1e8e3e; }
.worse { background: #fdecea; border-left: 4px solid #c5221f; }
.noisy { background: #fef7e0; border-left: 4px solid #e37400; }
.views { display: grid; gap: 6px 8px; align-items: start; }
.views .label { font-weight: 600; font-size: 0.92em; padding-top: 2px; }
.views .head { font-size: 0.85em; color: #555; }
.views img { width: 100%; height: auto; display: block; image-rendering: pixelated; background: #000; }
.cols2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 8px 24px; }
.cols2 > div { min-width: 0; }
svg.plot { width: 100%; height: auto; display: block; }
svg .tick { font-size: 11px; fill: #555; }
svg .axis { font-size: 12px; fill: #333; }
svg .legend { font-size: 12px; fill: #333; }
svg.bar { width: 260px; height: 34px; display: block; }
footer { color: #777; font-size: 0.82em; margin-top: 18px; }
)";

struct ViewRow {
  std::string label;
  const Volume* volume;
  bool colour;
};

std::string views_section(const ReportInputs& in, const Prepared& pr) {
  const ReportMetrics& m = pr.metrics;
  const Volume& out = *in.output;
  const VoxelSize& vs = out.voxel_size();
  const int64_t zc = out.nz() / 2, yc = out.ny() / 2, xc = out.nx() / 2;
  const int64_t bin = std::max<int64_t>(1, (std::max({out.nz(), out.ny(), out.nx()}) + kMaxPanelPx - 1) / kMaxPanelPx);

  std::vector<ViewRow> rows = {{fmt::format("input, {} along z", interp_name(in.interp)), &pr.interpolated, false},
                               {"restored", &out, false}};
  if (in.ground_truth) rows.push_back({"ground truth", in.ground_truth, false});
  if (in.uncertainty) rows.push_back({"uncertainty", in.uncertainty, true});

  // Columns share the width in proportion to the panels' physical widths; every image keeps
  // its physical aspect ratio (z at its own scale) whatever its pixel grid.
  const double w_xy = double(out.nx()) * vs.x, w_xz = double(out.nx()) * vs.x, w_yz = double(out.ny()) * vs.y;
  std::string s = "<section id=\"views\">\n<h2>Orthogonal views</h2>\n";
  s += fmt::format("<div class=\"views\" style=\"grid-template-columns: 8.5em {:.4f}fr {:.4f}fr {:.4f}fr\">\n",
                   w_xy / w_xy, w_xz / w_xy, w_yz / w_xy);
  s += fmt::format(
      "<div></div><div class=\"head\">XY at z = {}</div><div class=\"head\">XZ at y = {}</div>"
      "<div class=\"head\">YZ at x = {}</div>\n",
      zc, yc, xc);
  for (const ViewRow& r : rows) {
    s += fmt::format("<div class=\"label\">{}</div>\n", escape(r.label));
    const Plane planes[3] = {Plane::XY, Plane::XZ, Plane::YZ};
    const int64_t index[3] = {zc, yc, xc};
    for (int k = 0; k < 3; ++k) {
      const Panel p = section(*r.volume, planes[k], index[k], bin);
      const std::vector<uint8_t> px = r.colour ? colour_pixels(p, m.map_hi) : gray_pixels(p, m.display_lo, m.display_hi);
      const std::vector<uint8_t> png = encode_png(px, p.cols, p.rows, r.colour ? 3 : 1);
      // Physical size of the section (on the output grid's voxel size).
      const double phys_w = double(planes[k] == Plane::YZ ? r.volume->ny() * vs.y : r.volume->nx() * vs.x);
      const double phys_h = double(planes[k] == Plane::XY ? r.volume->ny() * vs.y : r.volume->nz() * vs.z);
      s += "<div>" +
           png_img(png, fmt::format("{} {}", r.label, plane_name(planes[k])),
                   fmt::format("aspect-ratio: {:.6g} / {:.6g}", phys_w, phys_h)) +
           "</div>\n";
    }
  }
  s += "</div>\n";
  s += fmt::format(
      "<p class=\"note\">Gray panels share one contrast: the restored volume's 0.1 and 99.9 percentiles, "
      "{} &rarr; black and {} &rarr; white (clipped). z is drawn at its physical scale ({} {} per "
      "output plane against {} {} per pixel in x).{}</p>\n",
      num(m.display_lo), num(m.display_hi), num(vs.z), escape(out.unit()), num(vs.x), escape(out.unit()),
      bin > 1 ? fmt::format(" Panels are shown binned {0}&times;{0} (area average) to keep the file small.", bin)
              : std::string());
  if (in.uncertainty) {
    // Colour bar: the same 9-stop map as the panels, 0 .. map_hi.
    std::string bar = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 260 34\" class=\"bar\">"
                      "<defs><linearGradient id=\"umap\">";
    for (int i = 0; i <= 8; ++i) {
      const auto c = viridis(i / 8.0);
      bar += fmt::format("<stop offset=\"{}%\" stop-color=\"rgb({},{},{})\"/>", i * 12.5, c[0], c[1], c[2]);
    }
    bar += "</linearGradient></defs><rect x=\"10\" y=\"2\" width=\"240\" height=\"14\" fill=\"url(#umap)\"/>";
    bar += fmt::format(
        "<text x=\"10\" y=\"31\" class=\"tick\">0</text><text x=\"250\" y=\"31\" text-anchor=\"end\" "
        "class=\"tick\">{}</text></svg>",
        num(m.map_hi, 4));
    s += fmt::format(
        "<div><p class=\"note\">Uncertainty map (own scale): the standard deviation of the {} restorations of "
        "each voxel, in output intensity units, 0 &rarr; dark to {} (its 99.9th percentile) &rarr; yellow, "
        "clipped above.</p>{}</div>\n",
        in.uncertainty_restorations, num(m.map_hi, 4), bar);
  }
  return s + "</section>\n";
}

// z profile through the centre (x = nx/2, y = ny/2) in the output's unit.
std::string profile_section(const ReportInputs& in, const Prepared& pr) {
  const Volume& out = *in.output;
  const int64_t yc = out.ny() / 2, xc = out.nx() / 2;
  const double dz = out.voxel_size().z;
  auto column = [&](const Volume& v, double step) {
    std::vector<std::pair<double, double>> pts;
    for (int64_t z = 0; z < v.nz(); ++z)
      pts.emplace_back((double(z) + 0.5) * step, voxel_as_float(v, (z * v.ny() + yc) * v.nx() + xc));
    return pts;
  };
  PlotSpec spec;
  spec.x_label = fmt::format("z ({})", out.unit());
  spec.y_label = "intensity";
  spec.width = 1080;
  spec.height = 330;
  spec.series.push_back({fmt::format("input, {}", interp_name(in.interp)), kBlue, column(pr.interpolated, dz)});
  spec.series.push_back({"restored", kVermillion, column(out, dz)});
  if (in.ground_truth) spec.series.push_back({"ground truth", kBlack, column(*in.ground_truth, dz)});
  Series samples{"input planes", kBlue, column(*in.input, dz * in.factor)};
  samples.line = false;
  samples.markers = true;
  spec.series.push_back(samples);
  std::string s = "<section id=\"profiles\">\n<h2>Line profile along z</h2>\n";
  s += svg_plot(spec);
  s += fmt::format(
      "<p class=\"note\">Through the centre of the volume (y = {}, x = {}), one voxel column. Dots: the input's "
      "own planes at their cell centres ((j + 0.5) &times; {} {}).</p>\n",
      yc, xc, num(dz * in.factor), escape(out.unit()));
  return s + "</section>\n";
}

std::string tuning_section(const ReportInputs& in) {
  std::string s = "<section id=\"tuning\">\n<h2>Tuning curve</h2>\n";
  if (in.val_history.empty() && in.loss_history.empty()) {
    s += "<p class=\"note\">No tuning history was given (a report made from files has none; "
         "<code>restore --report</code> includes it).</p>\n";
    std::vector<std::pair<std::string, std::string>> refs;
    if (std::isfinite(in.zero_shot_psnr)) refs.emplace_back("zero-shot validation PSNR", db(in.zero_shot_psnr));
    if (std::isfinite(in.interp_psnr)) refs.emplace_back("interpolation validation PSNR", db(in.interp_psnr));
    if (!refs.empty()) s += table(refs, false);
    return s + "</section>\n";
  }
  s += "<div class=\"cols2\">\n";
  if (!in.val_history.empty()) {
    PlotSpec v;
    v.x_label = "step";
    v.y_label = "validation PSNR (dB)";
    std::vector<std::pair<double, double>> pts;
    for (const auto& [step, p] : in.val_history) pts.emplace_back(double(step), p);
    Series se{"validation", kVermillion, pts};
    se.markers = pts.size() <= 60;
    v.series.push_back(se);
    v.refs.push_back({"zero-shot", kGreen, in.zero_shot_psnr});
    v.refs.push_back({fmt::format("{} interpolation", interp_name(in.interp)), kBlue, in.interp_psnr});
    s += "<div>" + svg_plot(v) + "</div>\n";
  }
  if (!in.loss_history.empty()) {
    PlotSpec l;
    l.x_label = "step";
    l.y_label = "training loss";
    std::vector<std::pair<double, double>> pts;
    double lo = kInf, hi = 0;
    for (const auto& [step, p] : in.loss_history) {
      pts.emplace_back(double(step), p);
      if (std::isfinite(p) && p > 0) lo = std::min(lo, p), hi = std::max(hi, p);
    }
    l.log_y = hi > 0 && hi / lo > 10;  // losses fall by decades early on
    l.series.push_back({"loss", kOrange, pts});
    s += "<div>" + svg_plot(l) + "</div>\n";
  }
  s += fmt::format(
      "</div>\n<p class=\"note\">Validation PSNR is measured on the stack's own {} "
      "self-supervised pairs (lateral slices degraded along one axis), not against a ground "
      "truth.</p>\n",
      in.val_in_sample ? "in-sample (training planes: too few to hold any out)" : "held-out");
  return s + "</section>\n";
}

std::string scores_row(const std::string& name, double a, double b, bool is_db = true) {
  return fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td></tr>\n", name, is_db ? db(a) : num(a),
                     is_db ? db(b) : num(b));
}

std::string consistency_section(const ReportInputs& in, const ReportMetrics& m) {
  const SelfConsistency& c = m.self;
  const DegradeParams p = noiseless(in);
  const std::string how =
      p.model == DegradeParams::Average
          ? fmt::format("box average of every {} output planes (the degradation of <code>simulate</code> and of the "
                        "training pairs)",
                        num(in.factor))
          : fmt::format("the PSF model along z (factor {})", num(in.factor));
  std::string s = "<section id=\"consistency\">\n<h2>Self-consistency (no ground truth needed)</h2>\n";
  s += fmt::format(
      "<p>The restored volume is degraded again along z, {}, and compared with the input it came from. A "
      "correct restoration must reproduce the input; the interpolation's value beside it is the baseline.</p>\n",
      how);
  s += "<table class=\"scores\"><thead><tr><th></th><th>restored</th><th>interpolation</th></tr></thead><tbody>\n";
  s += scores_row("PSNR(re-degraded, input)", c.output_psnr, c.interp_psnr);
  s += "</tbody></table>\n";
  const double gain = c.output_psnr - c.interp_psnr;
  if (std::isfinite(c.output_psnr) || std::isfinite(c.interp_psnr)) {
    const bool better = c.output_psnr >= c.interp_psnr;
    // Equal to the shown precision (or both exact) reads "as closely as".
    const bool same = c.output_psnr == c.interp_psnr || std::abs(gain) < 0.005;
    // Below the interpolation but above what removing the input's noise costs: what a
    // denoising restoration gives (the interpolation keeps the noise), not a contradiction.
    // Half a dB of slack for the estimate.
    const bool within_noise = !better && c.output_psnr >= c.noise_floor_psnr - 0.5;
    const std::string diff = std::isfinite(gain) ? fmt::format(" ({:+.2f} dB)", gain) : std::string();
    const std::string floor_text =
        fmt::format("a restoration that removed all of the input's noise (&sigma; &asymp; {} on the PSNR scale, "
                    "estimated from its XY planes) would score about {}",
                    num(c.input_noise_sigma, 3), db(c.noise_floor_psnr));
    std::string verdict;
    if (better)
      verdict = std::string("The re-degraded restoration reproduces the input ") +
                (same ? "as closely as" : "more closely than") + " the interpolation does" + diff + ".";
    else if (within_noise)
      verdict = "The re-degraded restoration reproduces the input less closely than the interpolation does" + diff +
                ", but within the input's noise: " + floor_text +
                ", and an interpolation keeps most of the noise. The difference is what denoising gives, not "
                "evidence against the restoration.";
    else
      verdict = "The re-degraded restoration reproduces the input less closely than the interpolation does" + diff +
                ", by more than the input's noise explains (" + floor_text +
                "): it holds z structure the input does not support under this degradation model, or the stack "
                "was degraded differently (another factor, a PSF).";
    s += fmt::format("<div class=\"verdict {}\">{}</div>\n", better ? "better" : within_noise ? "noisy" : "worse",
                     verdict);
  }
  std::vector<std::pair<std::string, std::string>> more;
  more.emplace_back("restored vs interpolation", db(c.output_vs_interp_psnr) +
                                                     " &mdash; how far the restoration moved from the "
                                                     "interpolation (not a quality score)");
  if (in.uncertainty) {
    if (!std::isnan(c.xz_yz_psnr))
      more.emplace_back("XZ vs YZ restorations", db(c.xz_yz_psnr) + " (from the map: |xz &minus; yz| = 2u; data "
                                                                   "range = the restored volume's p0.1 to p99.9)");
    more.emplace_back("uncertainty, mean / 99th percentile",
                      num(c.uncertainty_mean) + " / " + num(c.uncertainty_p99) + " (output intensity units)");
  }
  more.emplace_back("input noise (estimate)",
                    fmt::format("&sigma; &asymp; {} on the PSNR scale: removing all of it scores about {} (Immerk&aelig;r's "
                                "estimator on the XY planes; fine structure makes it err high)",
                                num(c.input_noise_sigma, 3), db(c.noise_floor_psnr)));
  more.emplace_back("planes compared", fmt::format("{} of {} input planes", c.planes_compared, in.input->nz()));
  more.emplace_back("PSNR scale", fmt::format("input p0.1 = {} &rarr; 0, p99.9 = {} &rarr; 1, clipped, data range 1",
                                              num(c.range.lo, 6), num(c.range.hi, 6)));
  s += table(more, false);
  s += "<p class=\"note\">Consistency is necessary, not sufficient: many volumes degrade to the same input, so a "
       "high value does not prove the restored detail is real. A value far below the interpolation's is a "
       "warning sign.</p>\n";
  if (m.gt.available) {
    s += "<h2>Against the ground truth</h2>\n";
    s += "<table class=\"scores\"><thead><tr><th></th><th>restored</th><th>interpolation</th></tr></thead><tbody>\n";
    s += scores_row("PSNR", m.gt.output_psnr, m.gt.interp_psnr);
    s += scores_row("SSIM (mean of XY, XZ, YZ)", m.gt.output_ssim, m.gt.interp_ssim, false);
    s += "</tbody></table>\n<p class=\"note\">Ground truth's 0.1 / 99.9 percentiles &rarr; [0, 1], clipped (as "
         "<code>isoprompt eval</code>); the common box when the plane counts differ.</p>\n";
  }
  return s + "</section>\n";
}

std::string voxel_text(const VoxelSize& v, const std::string& unit) {
  return fmt::format("{} &times; {} &times; {} {} (z, y, x)", num(v.z, 6), num(v.y, 6), num(v.x, 6), escape(unit));
}

std::string details_section(const ReportInputs& in) {
  const Volume& a = *in.input;
  const Volume& o = *in.output;
  std::vector<std::pair<std::string, std::string>> vol = {
      {"input", fmt::format("{} {}, voxel {}", to_string(a.shape()), dtype_name(a.dtype()),
                            voxel_text(a.voxel_size(), a.unit()))},
      {"restored", fmt::format("{} {}, voxel {}", to_string(o.shape()), dtype_name(o.dtype()),
                               voxel_text(o.voxel_size(), o.unit()))},
      {"z factor, interpolation", fmt::format("{}, {}", num(in.factor, 6), interp_name(in.interp))}};
  if (in.ground_truth)
    vol.emplace_back("ground truth", fmt::format("{} {}, voxel {}", to_string(in.ground_truth->shape()),
                                                 dtype_name(in.ground_truth->dtype()),
                                                 voxel_text(in.ground_truth->voxel_size(), in.ground_truth->unit())));
  if (in.uncertainty)
    vol.emplace_back("uncertainty map", fmt::format("{} {}", to_string(in.uncertainty->shape()),
                                                    dtype_name(in.uncertainty->dtype())));
  const double expect_z = a.voxel_size().z / in.factor;
  if (a.unit() == o.unit() && std::abs(expect_z - o.voxel_size().z) > 1e-6 * expect_z)
    vol.emplace_back("note", fmt::format("input z step / factor = {} {}, but the restored file says {}",
                                         num(expect_z, 6), escape(a.unit()), num(o.voxel_size().z, 6)));
  std::string s = "<section id=\"details\">\n<div class=\"cols2\">\n<div><h2>Volumes</h2>\n" + table(vol, false);
  if (!in.files.empty()) s += "<h2>Files</h2>\n" + table(in.files);
  s += "</div>\n<div>";
  if (!in.parameters.empty()) s += "<h2>Parameters</h2>\n" + table(in.parameters);
  if (!in.timings.empty()) s += "<h2>Timings</h2>\n" + table(in.timings);
  return s + "</div>\n</div>\n</section>\n";
}

}  // namespace

std::string base64_encode(const std::vector<uint8_t>& bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const uint32_t v = (uint32_t(bytes[i]) << 16) | (uint32_t(bytes[i + 1]) << 8) | bytes[i + 2];
    for (int s = 18; s >= 0; s -= 6) out += kAlphabet[(v >> s) & 63];
  }
  if (i < bytes.size()) {
    const bool two = i + 1 < bytes.size();
    const uint32_t v = (uint32_t(bytes[i]) << 16) | (two ? uint32_t(bytes[i + 1]) << 8 : 0);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += two ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

double redegraded_psnr(const Volume& input, const Volume& iso, const DegradeParams& p, const Normalizer& range) {
  return redegraded_psnr_counted(input, iso, p, range, nullptr);
}

double estimate_noise_sigma(const Volume& v, const Normalizer& range) {
  if (v.ny() < 3 || v.nx() < 3 || v.nz() < 1) return 0.0;
  const Volume unit = unit_scaled(v, range);
  std::vector<double> sums(static_cast<size_t>(v.nz()));
#pragma omp parallel for schedule(static)
  for (int64_t z = 0; z < v.nz(); ++z) sums[static_cast<size_t>(z)] = laplacian_difference_sum(unit, z);
  double total = 0;
  for (double x : sums) total += x;
  const double interior = double(v.ny() - 2) * double(v.nx() - 2) * double(v.nz());
  constexpr double kPi = 3.14159265358979323846;
  return std::sqrt(kPi / 2.0) * total / (6.0 * interior);
}

ReportMetrics compute_report_metrics(const ReportInputs& in) { return prepare(in).metrics; }

std::string render_report_html(const ReportInputs& in, ReportMetrics* metrics) {
  const Prepared pr = prepare(in);
  if (metrics) *metrics = pr.metrics;
  std::string h = "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  // The file must stand alone: no script, nothing fetched; the policy makes a browser refuse
  // (and report) anything else.
  h += "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
       "style-src 'unsafe-inline'\">\n";
  h += fmt::format("<title>isoprompt report: {}</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n",
                   escape(in.title), kStyle);
  h += fmt::format("<header><h1>{}</h1><p>isoprompt {} QC report &middot; {} &rarr; {} &middot; z factor {} ({})</p>"
                   "</header>\n",
                   escape(in.title.empty() ? std::string("restoration") : in.title), ISOPROMPT_VERSION,
                   to_string(in.input->shape()), to_string(in.output->shape()), num(in.factor, 6),
                   interp_name(in.interp));
  h += consistency_section(in, pr.metrics);
  h += views_section(in, pr);
  h += profile_section(in, pr);
  h += tuning_section(in);
  h += details_section(in);
  h += "<footer>Made by <code>isoprompt</code>. Everything is in this one file: no script, no network.</footer>\n";
  return h + "</main>\n</body>\n</html>\n";
}

void write_report(const std::string& path, const ReportInputs& in, ReportMetrics* metrics) {
  check_output_path(path);
  const std::string html = render_report_html(in, metrics);
  AtomicOutput out(path);
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(out.temp_path().c_str(), "wb"), &std::fclose);
  if (!f) throw_input("cannot write {}", path);
  if (std::fwrite(html.data(), 1, html.size(), f.get()) != html.size() || std::fflush(f.get()) != 0)
    throw_error("cannot write {} (disk full?)", path);
  f.reset();
  out.commit();
}

}  // namespace isoprompt
