// Procedural phantoms. Every random choice is drawn serially from a SplitMix stream, and
// per-voxel noise comes from hash(seed, voxel index), so results do not depend on the
// thread count. Objects are rasterised with max/add per voxel inside their bounding box.
#include "isoprompt/phantom.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>

#include "isoprompt/error.h"

namespace isoprompt {

// ---- random numbers -------------------------------------------------------------------

uint64_t hash64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t SplitMix::next() {
  state_ += 0x9e3779b97f4a7c15ULL;
  uint64_t z = state_;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}
double SplitMix::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
double SplitMix::uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
int64_t SplitMix::randint(int64_t lo, int64_t hi) {
  if (hi <= lo) return lo;
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  return lo + static_cast<int64_t>(next() % span);
}
double SplitMix::normal() {
  const double u1 = 1.0 - uniform();  // (0, 1]
  const double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

namespace {

constexpr double kTwoPi = 6.283185307179586;

// Standard normal from a (seed, index) pair, no state.
inline float hashed_normal(uint64_t seed, uint64_t i) {
  const uint64_t a = hash64(seed ^ (2 * i)), b = hash64(seed ^ (2 * i + 1));
  const double u1 = 1.0 - static_cast<double>(a >> 11) * 0x1.0p-53;
  const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;
  return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2));
}

struct Vec3 {
  double z = 0, y = 0, x = 0;
};
inline Vec3 operator+(Vec3 a, Vec3 b) { return {a.z + b.z, a.y + b.y, a.x + b.x}; }
inline Vec3 operator-(Vec3 a, Vec3 b) { return {a.z - b.z, a.y - b.y, a.x - b.x}; }
inline Vec3 operator*(Vec3 a, double s) { return {a.z * s, a.y * s, a.x * s}; }
inline double dot(Vec3 a, Vec3 b) { return a.z * b.z + a.y * b.y + a.x * b.x; }
inline double norm(Vec3 a) { return std::sqrt(dot(a, a)); }
inline Vec3 normalized(Vec3 a) {
  const double n = norm(a);
  return n > 0 ? a * (1.0 / n) : Vec3{0, 0, 1};
}
Vec3 random_unit(SplitMix& r) { return normalized({r.normal(), r.normal(), r.normal()}); }
Vec3 random_point(SplitMix& r, const Shape3& s, double margin = 0) {
  return {r.uniform(margin, std::max(margin, s.z - 1 - margin)),
          r.uniform(margin, std::max(margin, s.y - 1 - margin)),
          r.uniform(margin, std::max(margin, s.x - 1 - margin))};
}

// Rotation matrix from a random unit quaternion (uniform over rotations).
std::array<double, 9> random_rotation(SplitMix& r) {
  double q[4] = {r.normal(), r.normal(), r.normal(), r.normal()};
  const double n = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  for (double& v : q) v /= (n > 0 ? n : 1);
  const double w = q[0], a = q[1], b = q[2], c = q[3];
  return {1 - 2 * (b * b + c * c), 2 * (a * b - c * w),     2 * (a * c + b * w),
          2 * (a * b + c * w),     1 - 2 * (a * a + c * c), 2 * (b * c - a * w),
          2 * (a * c - b * w),     2 * (b * c + a * w),     1 - 2 * (a * a + b * b)};
}

float* fptr(Volume& v) { return v.data<float>(); }

// Bounding box of a sphere of radius `r` around c, clamped to the volume.
struct Box {
  int64_t z0, z1, y0, y1, x0, x1;  // inclusive
  bool empty() const { return z0 > z1 || y0 > y1 || x0 > x1; }
};
Box box_around(Vec3 c, double r, const Shape3& s) {
  auto lo = [](double v) { return static_cast<int64_t>(std::floor(v)); };
  auto hi = [](double v) { return static_cast<int64_t>(std::ceil(v)); };
  return {std::max<int64_t>(0, lo(c.z - r)), std::min<int64_t>(s.z - 1, hi(c.z + r)),
          std::max<int64_t>(0, lo(c.y - r)), std::min<int64_t>(s.y - 1, hi(c.y + r)),
          std::max<int64_t>(0, lo(c.x - r)), std::min<int64_t>(s.x - 1, hi(c.x + r))};
}

// Scales automatic counts with the volume's size relative to 128^3.
int auto_count(int requested, double per_128cube, const Shape3& s, int minimum = 1) {
  if (requested >= 0) return requested;
  const double ratio = static_cast<double>(s.numel()) / (128.0 * 128.0 * 128.0);
  return std::max(minimum, static_cast<int>(std::lround(per_128cube * ratio)));
}

// Zero-mean, unit-std smooth noise with correlation length ~sigma voxels.
Volume smooth_noise(const Shape3& s, double sigma, uint64_t seed) {
  if (sigma <= 3.0) {
    Volume v(s, DType::F32);
    float* d = fptr(v);
    const int64_t n = v.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) d[i] = hashed_normal(seed, static_cast<uint64_t>(i));
    gaussian_blur_inplace(v, sigma, sigma, sigma);
    // Variance of blurred unit white noise = prod over axes of sum of squared weights.
    double var = 1;
    const auto k = gaussian_kernel(sigma);
    double s2 = 0;
    for (float w : k) s2 += double(w) * w;
    var = s2 * s2 * s2;
    const float inv = static_cast<float>(1.0 / std::sqrt(var));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) d[i] *= inv;
    return v;
  }
  // Large scales: noise on a coarse grid, blurred, trilinearly interpolated.
  const double f = std::floor(sigma / 1.5);
  const Shape3 c{static_cast<int64_t>(std::ceil(s.z / f)) + 2, static_cast<int64_t>(std::ceil(s.y / f)) + 2,
                 static_cast<int64_t>(std::ceil(s.x / f)) + 2};
  Volume coarse = smooth_noise(c, sigma / f, hash64(seed));
  const float* cd = coarse.data<float>();
  Volume v(s, DType::F32);
  float* d = fptr(v);
#pragma omp parallel for schedule(static)
  for (int64_t z = 0; z < s.z; ++z) {
    const double fz = z / f;
    const int64_t z0 = static_cast<int64_t>(fz);
    const double wz = fz - z0;
    for (int64_t y = 0; y < s.y; ++y) {
      const double fy = y / f;
      const int64_t y0 = static_cast<int64_t>(fy);
      const double wy = fy - y0;
      for (int64_t x = 0; x < s.x; ++x) {
        const double fx = x / f;
        const int64_t x0 = static_cast<int64_t>(fx);
        const double wx = fx - x0;
        auto at = [&](int64_t a, int64_t b, int64_t e) { return double(cd[(a * c.y + b) * c.x + e]); };
        const double v00 = at(z0, y0, x0) * (1 - wx) + at(z0, y0, x0 + 1) * wx;
        const double v01 = at(z0, y0 + 1, x0) * (1 - wx) + at(z0, y0 + 1, x0 + 1) * wx;
        const double v10 = at(z0 + 1, y0, x0) * (1 - wx) + at(z0 + 1, y0, x0 + 1) * wx;
        const double v11 = at(z0 + 1, y0 + 1, x0) * (1 - wx) + at(z0 + 1, y0 + 1, x0 + 1) * wx;
        const double val = (v00 * (1 - wy) + v01 * wy) * (1 - wz) + (v10 * (1 - wy) + v11 * wy) * wz;
        d[(z * s.y + y) * s.x + x] = static_cast<float>(val);
      }
    }
  }
  return v;
}

// ---- object layers ---------------------------------------------------------------------
// Each layer function draws into `out` (float32, same shape), combining with max.

void draw_filaments(Volume& out, int count, SplitMix& r) {
  const Shape3 s = out.shape();
  float* d = fptr(out);
  const double diag = std::sqrt(double(s.z * s.z + s.y * s.y + s.x * s.x));
  for (int f = 0; f < count; ++f) {
    const double sigma = r.uniform(0.6, 2.0);
    const double bright = r.uniform(0.35, 1.0);
    const double stiffness = r.uniform(0.03, 0.15);  // direction noise per unit step
    const double max_len = r.uniform(0.4, 1.2) * diag;
    const double mod_freq = r.uniform(0.02, 0.1), mod_phase = r.uniform(0, kTwoPi);
    const double mod_amp = r.uniform(0.0, 0.4);
    const Vec3 start = random_point(r, s);
    // Half of the curves run mostly laterally (like cytoskeleton in flat cells).
    const bool planar = r.uniform() < 0.5;
    Vec3 dir0 = random_unit(r);
    if (planar) dir0 = normalized({dir0.z * 0.2, dir0.y, dir0.x});
    const double z_damp = planar ? 0.2 : 1.0;
    const uint64_t walk_seed = r.next();
    const double step = std::min(0.5, 0.5 * sigma);
    const double rad = 3.0 * sigma;
    // Walk both ways from the start point.
    for (int side = 0; side < 2; ++side) {
      SplitMix w(hash_combine(walk_seed, side));
      Vec3 p = start;
      Vec3 dir = side == 0 ? dir0 : dir0 * -1.0;
      const double inv2s2 = 1.0 / (2 * sigma * sigma);
      for (double t = 0; t < max_len / 2; t += step) {
        const double along = side == 0 ? t : -t;
        const double b = bright * (1.0 - mod_amp * 0.5 * (1 + std::sin(mod_freq * along + mod_phase)));
        const Box bx = box_around(p, rad, s);
        if (bx.empty()) break;  // left the volume
        for (int64_t z = bx.z0; z <= bx.z1; ++z)
          for (int64_t y = bx.y0; y <= bx.y1; ++y)
            for (int64_t x = bx.x0; x <= bx.x1; ++x) {
              const double dz = z - p.z, dy = y - p.y, dx = x - p.x;
              const double d2 = dz * dz + dy * dy + dx * dx;
              if (d2 > rad * rad) continue;
              const float v = static_cast<float>(b * std::exp(-d2 * inv2s2));
              float& o = d[(z * s.y + y) * s.x + x];
              if (v > o) o = v;
            }
        dir = normalized(dir + Vec3{w.normal() * z_damp, w.normal(), w.normal()} * (stiffness * std::sqrt(step)));
        if (planar) dir.z *= 0.98;
        p = p + dir * step;
      }
    }
  }
}

// Ellipsoid centres with pairwise clearance; returns centres and radii.
struct Blob {
  Vec3 c;
  double a, b, e;  // semi-axes (voxels)
  std::array<double, 9> rot;
  double bright;
};

std::vector<Blob> place_blobs(int count, double rmin, double rmax, double clearance, const Shape3& s,
                              SplitMix& r) {
  std::vector<Blob> blobs;
  for (int attempt = 0; attempt < count * 50 && static_cast<int>(blobs.size()) < count; ++attempt) {
    Blob bl;
    const double rr = r.uniform(rmin, rmax);
    bl.a = rr * r.uniform(0.75, 1.25);
    bl.b = rr * r.uniform(0.75, 1.25);
    bl.e = rr * r.uniform(0.6, 1.0);
    bl.rot = random_rotation(r);
    bl.bright = r.uniform(0.4, 0.9);
    bl.c = random_point(r, s, std::min(rr * 0.5, 0.25 * std::min({s.z, s.y, s.x}) * 1.0));
    const double rmax_bl = std::max({bl.a, bl.b, bl.e});
    bool ok = true;
    for (const Blob& o : blobs) {
      const double ro = std::max({o.a, o.b, o.e});
      if (norm(o.c - bl.c) < rmax_bl + ro + clearance) {
        ok = false;
        break;
      }
    }
    if (ok) blobs.push_back(bl);
  }
  return blobs;
}

void draw_nuclei(Volume& out, int count, SplitMix& r) {
  const Shape3 s = out.shape();
  const double scale = std::cbrt(static_cast<double>(std::min({s.z, s.y, s.x})) / 128.0);
  const double rmin = std::max(3.0, 10.0 * scale), rmax = std::max(4.0, 24.0 * scale);
  const auto blobs = place_blobs(count, rmin, rmax, 3.0, s, r);
  const Volume tex = smooth_noise(s, 1.5, r.next());
  const Volume coarse = smooth_noise(s, 4.0, r.next());
  const float* t1 = tex.data<float>();
  const float* t2 = coarse.data<float>();
  float* d = fptr(out);
  for (const Blob& bl : blobs) {
    const double rm = std::max({bl.a, bl.b, bl.e});
    const Box bx = box_around(bl.c, rm + 3, s);
    const double edge = 0.8;  // edge softness in voxels
#pragma omp parallel for schedule(static)
    for (int64_t z = bx.z0; z <= bx.z1; ++z)
      for (int64_t y = bx.y0; y <= bx.y1; ++y)
        for (int64_t x = bx.x0; x <= bx.x1; ++x) {
          const Vec3 q = Vec3{double(z), double(y), double(x)} - bl.c;
          const auto& R = bl.rot;
          const double u = (R[0] * q.z + R[3] * q.y + R[6] * q.x) / bl.a;
          const double v = (R[1] * q.z + R[4] * q.y + R[7] * q.x) / bl.b;
          const double w = (R[2] * q.z + R[5] * q.y + R[8] * q.x) / bl.e;
          const double e = std::sqrt(u * u + v * v + w * w);
          const double signed_dist = (1.0 - e) * rm;  // ~ voxels inside the surface
          if (signed_dist < -3 * edge) continue;
          const double inside = 1.0 / (1.0 + std::exp(-signed_dist / edge));
          const int64_t i = (z * s.y + y) * s.x + x;
          double texture = 0.75 + 0.12 * t1[i] + 0.12 * t2[i];
          texture = std::min(1.2, std::max(0.3, texture));
          const float val = static_cast<float>(bl.bright * inside * texture);
          if (val > d[i]) d[i] = val;
        }
  }
}

// Voronoi walls: for each voxel, distance to the bisector plane of its two nearest seeds.
// Writes wall strength in [0, 1] (1 on the wall) into `out`, combining with max.
void draw_walls(Volume& out, int cells, double sigma, SplitMix& r, bool textured) {
  const Shape3 s = out.shape();
  std::vector<Vec3> seeds(static_cast<size_t>(std::max(2, cells)));
  for (Vec3& p : seeds) p = random_point(r, s, -8);
  const Volume tex = smooth_noise(s, 3.0, r.next());
  const float* t = tex.data<float>();
  float* d = fptr(out);
  const double inv2s2 = 1.0 / (2 * sigma * sigma);
  const int64_t n = static_cast<int64_t>(seeds.size());
#pragma omp parallel for schedule(static)
  for (int64_t z = 0; z < s.z; ++z)
    for (int64_t y = 0; y < s.y; ++y)
      for (int64_t x = 0; x < s.x; ++x) {
        const Vec3 p{double(z), double(y), double(x)};
        double d1 = 1e300, d2 = 1e300;
        int64_t i1 = 0, i2 = 0;
        for (int64_t k = 0; k < n; ++k) {
          const Vec3 q = p - seeds[k];
          const double dd = dot(q, q);
          if (dd < d1) {
            d2 = d1, i2 = i1;
            d1 = dd, i1 = k;
          } else if (dd < d2) {
            d2 = dd, i2 = k;
          }
        }
        const double sep = norm(seeds[i1] - seeds[i2]);
        const double dist = (d2 - d1) / (2 * std::max(sep, 1e-9));
        const int64_t i = (z * s.y + y) * s.x + x;
        double val = std::exp(-dist * dist * inv2s2);
        if (textured) val *= std::min(1.0, std::max(0.2, 0.7 + 0.25 * t[i]));
        const float fv = static_cast<float>(val);
        if (fv > d[i]) d[i] = fv;
      }
}

// Puncta: exactly `count` separated objects (if they fit), Gaussian spots or hollow vesicles.
void draw_puncta(Volume& out, int count, double vesicle_fraction, SplitMix& r) {
  const Shape3 s = out.shape();
  float* d = fptr(out);
  struct Spot {
    Vec3 c;
    double sigma, radius, bright;
  };
  std::vector<Spot> spots;
  for (int attempt = 0; attempt < count * 100 && static_cast<int>(spots.size()) < count; ++attempt) {
    Spot sp;
    sp.sigma = r.uniform(0.7, 1.4);
    sp.radius = r.uniform() < vesicle_fraction ? r.uniform(2.0, 3.5) : 0.0;
    sp.bright = r.uniform(0.5, 1.0);
    sp.c = random_point(r, s, 2.0);
    const double ext = sp.radius + 3 * sp.sigma;
    bool ok = true;
    for (const Spot& o : spots)
      if (norm(o.c - sp.c) < ext + o.radius + 3 * o.sigma + 1.0) {
        ok = false;
        break;
      }
    if (ok) spots.push_back(sp);
  }
  for (const Spot& sp : spots) {
    const double rad = sp.radius + 3 * sp.sigma;
    const Box bx = box_around(sp.c, rad, s);
    const double inv2s2 = 1.0 / (2 * sp.sigma * sp.sigma);
    for (int64_t z = bx.z0; z <= bx.z1; ++z)
      for (int64_t y = bx.y0; y <= bx.y1; ++y)
        for (int64_t x = bx.x0; x <= bx.x1; ++x) {
          const double dist = norm(Vec3{double(z), double(y), double(x)} - sp.c) - sp.radius;
          const float v = static_cast<float>(sp.bright * std::exp(-dist * dist * inv2s2));
          float& o = d[(z * s.y + y) * s.x + x];
          if (v > o) o = v;
        }
  }
}

Volume background(const Shape3& s, SplitMix& r, double level, double variation) {
  Volume bg = smooth_noise(s, std::max(4.0, std::min({s.z, s.y, s.x}) / 6.0), r.next());
  float* d = fptr(bg);
  const int64_t n = bg.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(std::max(0.0, level + variation * d[i]));
  return bg;
}

void add_scaled(Volume& dst, const Volume& src, double w) {
  float* d = fptr(dst);
  const float* a = src.data<float>();
  const float fw = static_cast<float>(w);
  const int64_t n = dst.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) d[i] += fw * a[i];
}

// Divides by the maximum when it exceeds 1 and clamps to [0, 1] (max is order independent).
void fit_unit_range(Volume& v) {
  float* d = fptr(v);
  const int64_t n = v.numel();
  float mx = 0;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, d[i]);
  const float inv = mx > 1.f ? 1.f / mx : 1.f;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) d[i] = std::min(1.f, std::max(0.f, d[i] * inv));
}

Volume make_em(const PhantomParams& p, SplitMix& r) {
  const Shape3 s = p.size;
  const double scale = std::cbrt(static_cast<double>(std::min({s.z, s.y, s.x})) / 128.0);
  Volume out = smooth_noise(s, 1.0, r.next());
  const Volume coarse = smooth_noise(s, 5.0, r.next());
  {
    float* d = fptr(out);
    const float* c = coarse.data<float>();
    const double base = r.uniform(0.5, 0.65);
    const int64_t n = out.numel();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) d[i] = static_cast<float>(base + 0.06 * d[i] + 0.05 * c[i]);
  }
  Volume walls(s, DType::F32);
  draw_walls(walls, auto_count(p.n_cells, 20, s, 2), r.uniform(0.7, 1.3), r, false);
  // Mitochondria: dark elongated blobs with lighter cristae stripes.
  Volume mito(s, DType::F32);
  {
    const int count = auto_count(-1, 10, s);
    const auto blobs = place_blobs(count, std::max(2.5, 5.0 * scale), std::max(3.0, 9.0 * scale), 2.0, s, r);
    float* d = fptr(mito);
    for (Blob bl : blobs) {
      bl.a *= 2.2;  // elongate
      const double rm = std::max({bl.a, bl.b, bl.e});
      const double freq = r.uniform(0.8, 1.3);
      const Box bx = box_around(bl.c, rm + 3, s);
#pragma omp parallel for schedule(static)
      for (int64_t z = bx.z0; z <= bx.z1; ++z)
        for (int64_t y = bx.y0; y <= bx.y1; ++y)
          for (int64_t x = bx.x0; x <= bx.x1; ++x) {
            const Vec3 q = Vec3{double(z), double(y), double(x)} - bl.c;
            const auto& R = bl.rot;
            const double u = (R[0] * q.z + R[3] * q.y + R[6] * q.x);
            const double v = (R[1] * q.z + R[4] * q.y + R[7] * q.x);
            const double w = (R[2] * q.z + R[5] * q.y + R[8] * q.x);
            const double e = std::sqrt(u * u / (bl.a * bl.a) + v * v / (bl.b * bl.b) + w * w / (bl.e * bl.e));
            const double sd = (1.0 - e) * std::min({bl.a, bl.b, bl.e});
            if (sd < -3) continue;
            const double inside = 1.0 / (1.0 + std::exp(-sd / 0.7));
            const double cristae = 0.75 + 0.25 * std::cos(freq * u);
            const float val = static_cast<float>(inside * cristae);
            float& o = d[(z * s.y + y) * s.x + x];
            if (val > o) o = val;
          }
    }
  }
  Volume ves(s, DType::F32);
  draw_puncta(ves, auto_count(p.n_puncta, 150, s), 0.8, r);
  float* d = fptr(out);
  const float* w = walls.data<float>();
  const float* m = mito.data<float>();
  const float* v = ves.data<float>();
  const float wd = static_cast<float>(r.uniform(0.3, 0.45)), md = static_cast<float>(r.uniform(0.2, 0.35));
  const int64_t n = out.numel();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    d[i] = std::min(1.f, std::max(0.f, d[i] - wd * w[i] - md * m[i] - 0.3f * v[i]));
  return out;
}

}  // namespace

// ---- public API ----------------------------------------------------------------------

const char* phantom_kind_name(PhantomKind k) {
  switch (k) {
    case PhantomKind::Mixed: return "mixed";
    case PhantomKind::Filaments: return "filaments";
    case PhantomKind::Nuclei: return "nuclei";
    case PhantomKind::Membranes: return "membranes";
    case PhantomKind::Puncta: return "puncta";
    case PhantomKind::EM: return "em";
  }
  return "mixed";
}

std::vector<PhantomKind> all_phantom_kinds() {
  return {PhantomKind::Mixed,     PhantomKind::Filaments, PhantomKind::Nuclei,
          PhantomKind::Membranes, PhantomKind::Puncta,    PhantomKind::EM};
}

PhantomKind parse_phantom_kind(const std::string& s) {
  for (PhantomKind k : all_phantom_kinds())
    if (s == phantom_kind_name(k)) return k;
  throw_input("unknown phantom kind '{}' (expected mixed, filaments, nuclei, membranes, puncta or em)", s);
}

std::vector<float> gaussian_kernel(double sigma) {
  const int r = std::max(1, static_cast<int>(std::ceil(3.0 * sigma)));
  std::vector<float> k(2 * r + 1);
  double sum = 0;
  std::vector<double> t(2 * r + 1);
  for (int i = -r; i <= r; ++i) sum += t[i + r] = std::exp(-0.5 * i * i / (sigma * sigma));
  for (int i = 0; i <= 2 * r; ++i) k[i] = static_cast<float>(t[i] / sum);
  return k;
}

void gaussian_blur_inplace(Volume& v, double sz, double sy, double sx) {
  if (v.dtype() != DType::F32) throw_error("gaussian_blur_inplace needs a float32 volume");
  const Shape3 s = v.shape();
  float* d = v.data<float>();
  const int64_t plane = s.y * s.x;
  // z and y: combine whole x-rows (vectorisable); x: per row with a padded buffer.
  if (sz > 0 && s.z > 1) {
    const auto k = gaussian_kernel(sz);
    const int64_t r = static_cast<int64_t>(k.size() / 2);
    Volume tmp(s, DType::F32);
    float* t = tmp.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t y = 0; y < s.y; ++y)
      for (int64_t z = 0; z < s.z; ++z) {
        float* o = t + z * plane + y * s.x;
        for (int64_t x = 0; x < s.x; ++x) o[x] = 0;
        for (int64_t j = -r; j <= r; ++j) {
          const int64_t zz = std::min(s.z - 1, std::max<int64_t>(0, z + j));
          const float* in = d + zz * plane + y * s.x;
          const float w = k[j + r];
          for (int64_t x = 0; x < s.x; ++x) o[x] += w * in[x];
        }
      }
    std::copy(t, t + v.numel(), d);
  }
  if (sy > 0 && s.y > 1) {
    const auto k = gaussian_kernel(sy);
    const int64_t r = static_cast<int64_t>(k.size() / 2);
#pragma omp parallel
    {
      std::vector<float> buf(static_cast<size_t>(plane));
#pragma omp for schedule(static)
      for (int64_t z = 0; z < s.z; ++z) {
        float* p = d + z * plane;
        for (int64_t y = 0; y < s.y; ++y) {
          float* o = buf.data() + y * s.x;
          for (int64_t x = 0; x < s.x; ++x) o[x] = 0;
          for (int64_t j = -r; j <= r; ++j) {
            const int64_t yy = std::min(s.y - 1, std::max<int64_t>(0, y + j));
            const float* in = p + yy * s.x;
            const float w = k[j + r];
            for (int64_t x = 0; x < s.x; ++x) o[x] += w * in[x];
          }
        }
        std::copy(buf.begin(), buf.end(), p);
      }
    }
  }
  if (sx > 0 && s.x > 1) {
    const auto k = gaussian_kernel(sx);
    const int64_t r = static_cast<int64_t>(k.size() / 2);
    const int64_t rows = s.z * s.y;
#pragma omp parallel
    {
      std::vector<float> buf(static_cast<size_t>(s.x + 2 * r));
#pragma omp for schedule(static)
      for (int64_t row = 0; row < rows; ++row) {
        float* p = d + row * s.x;
        for (int64_t x = -r; x < s.x + r; ++x) buf[x + r] = p[std::min(s.x - 1, std::max<int64_t>(0, x))];
        for (int64_t x = 0; x < s.x; ++x) {
          float acc = 0;
          for (int64_t j = 0; j <= 2 * r; ++j) acc += k[j] * buf[x + j];
          p[x] = acc;
        }
      }
    }
  }
}

Volume make_phantom(const PhantomParams& p) {
  const Shape3 s = p.size;
  if (s.z < 1 || s.y < 1 || s.x < 1 || s.z > 4096 || s.y > 8192 || s.x > 8192)
    throw_input("phantom size {} is out of range (1..4096 z, 1..8192 y/x)", to_string(s));
  SplitMix r(hash_combine(p.seed, static_cast<uint64_t>(p.kind) + 1));
  Volume out;
  switch (p.kind) {
    case PhantomKind::Filaments: {
      out = background(s, r, 0.03, 0.015);
      Volume f(s, DType::F32);
      draw_filaments(f, auto_count(p.n_filaments, 48, s), r);
      add_scaled(out, f, 1.0);
      break;
    }
    case PhantomKind::Nuclei: {
      out = background(s, r, 0.03, 0.015);
      Volume f(s, DType::F32);
      draw_nuclei(f, auto_count(p.n_nuclei, 10, s), r);
      add_scaled(out, f, 1.0);
      break;
    }
    case PhantomKind::Membranes: {
      out = background(s, r, 0.03, 0.015);
      Volume f(s, DType::F32);
      draw_walls(f, auto_count(p.n_cells, 27, s, 2), r.uniform(0.7, 1.5), r, true);
      add_scaled(out, f, r.uniform(0.5, 0.9));
      break;
    }
    case PhantomKind::Puncta: {
      out = background(s, r, 0.03, 0.015);
      Volume f(s, DType::F32);
      draw_puncta(f, auto_count(p.n_puncta, 300, s), 0.3, r);
      add_scaled(out, f, 1.0);
      break;
    }
    case PhantomKind::EM: out = make_em(p, r); break;
    case PhantomKind::Mixed: {
      out = background(s, r, r.uniform(0.02, 0.08), r.uniform(0.01, 0.04));
      // Each component with probability ~0.6, at least one.
      bool use[4];
      bool any = false;
      for (bool& u : use) any |= (u = r.uniform() < 0.6);
      if (!any) use[r.randint(0, 3)] = true;
      if (use[0]) {
        Volume f(s, DType::F32);
        draw_walls(f, auto_count(p.n_cells, 27, s, 2), r.uniform(0.7, 1.5), r, true);
        add_scaled(out, f, r.uniform(0.15, 0.5));
      }
      if (use[1]) {
        Volume f(s, DType::F32);
        draw_nuclei(f, auto_count(p.n_nuclei, 10, s), r);
        add_scaled(out, f, r.uniform(0.4, 0.9));
      }
      if (use[2]) {
        Volume f(s, DType::F32);
        draw_filaments(f, auto_count(p.n_filaments, 48, s), r);
        add_scaled(out, f, r.uniform(0.4, 1.0));
      }
      if (use[3]) {
        Volume f(s, DType::F32);
        draw_puncta(f, auto_count(p.n_puncta, 300, s), 0.3, r);
        add_scaled(out, f, r.uniform(0.4, 1.0));
      }
      break;
    }
  }
  fit_unit_range(out);
  out.set_voxel_size(p.voxel);
  return out;
}

Volume apply_optics(const Volume& v, const OpticsParams& o) {
  if (o.psf_lateral_fwhm_um < 0 || o.psf_axial_fwhm_um < 0)
    throw_input("psf widths must be >= 0, got lateral {} and axial {}", o.psf_lateral_fwhm_um,
                o.psf_axial_fwhm_um);
  if (o.poisson_peak < 0 || o.gaussian_sigma < 0)
    throw_input("noise levels must be >= 0, got poisson peak {} and gaussian sigma {}", o.poisson_peak,
                o.gaussian_sigma);
  if (!(o.z_factor >= 1) || o.z_factor > v.nz())
    throw_input("z factor must be between 1 and the number of planes ({}), got {}", v.nz(), o.z_factor);
  Volume f = v.dtype() == DType::F32 ? v.clone() : v.astype(DType::F32);
  const VoxelSize vs = v.voxel_size();
  constexpr double kFwhmToSigma = 1.0 / 2.3548200450309493;
  gaussian_blur_inplace(f, o.psf_axial_fwhm_um * kFwhmToSigma / vs.z, o.psf_lateral_fwhm_um * kFwhmToSigma / vs.y,
                        o.psf_lateral_fwhm_um * kFwhmToSigma / vs.x);
  if (o.z_factor > 1) {
    const double K = o.z_factor;
    const int64_t nz = static_cast<int64_t>(std::floor(v.nz() / K + 1e-9));
    Volume sub({nz, v.ny(), v.nx()}, DType::F32, {vs.z * K, vs.y, vs.x}, v.unit());
    const int64_t plane = v.ny() * v.nx();
    const float* src = f.data<float>();
    float* dst = sub.data<float>();
#pragma omp parallel for schedule(static)
    for (int64_t j = 0; j < nz; ++j) {
      const double c = std::min(double(v.nz() - 1), std::max(0.0, (j + 0.5) * K - 0.5));
      const int64_t z0 = static_cast<int64_t>(std::floor(c));
      const int64_t z1 = std::min(v.nz() - 1, z0 + 1);
      const float w = static_cast<float>(c - z0);
      for (int64_t i = 0; i < plane; ++i)
        dst[j * plane + i] = (1 - w) * src[z0 * plane + i] + w * src[z1 * plane + i];
    }
    f = sub;
  }
  if (o.poisson_peak > 0 || o.gaussian_sigma > 0) {
    float* d = f.data<float>();
    const int64_t n = f.numel();
    const uint64_t seed = hash_combine(o.seed, 0x5eed);
    const double peak = o.poisson_peak, gs = o.gaussian_sigma;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      double val = d[i];
      if (peak > 0) {
        const double lambda = std::max(0.0, val) * peak;
        double k;
        if (lambda < 30) {  // Knuth, on a per-voxel stream
          SplitMix g(hash_combine(seed, static_cast<uint64_t>(i)));
          const double L = std::exp(-lambda);
          double prod = g.uniform();
          k = 0;
          while (prod > L) {
            k += 1;
            prod *= g.uniform();
          }
        } else {
          k = std::max(0.0, std::round(lambda + std::sqrt(lambda) * hashed_normal(seed, static_cast<uint64_t>(i))));
        }
        val = k / peak;
      }
      if (gs > 0) val += gs * hashed_normal(hash64(seed), static_cast<uint64_t>(i));
      d[i] = static_cast<float>(val);
    }
  }
  f.set_voxel_size({vs.z * o.z_factor, vs.y, vs.x});
  f.set_unit(v.unit());
  return f;
}

}  // namespace isoprompt
