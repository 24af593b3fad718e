// Procedural 3D phantoms that look like fluorescence and electron microscopy, with an
// optional optical model (anisotropic Gaussian PSF, z-subsampling, Poisson/Gaussian noise).
// Used by the demo, the tests and backbone pretraining.
//
//   PhantomParams p;                       // 128^3 "mixed" fluorescence, seed 0
//   p.kind = PhantomKind::Filaments;
//   p.seed = 7;
//   Volume gt = make_phantom(p);           // float32, clean, values in [0, 1], isotropic voxels
//   OpticsParams o;
//   o.psf_lateral_fwhm_um = 0.25; o.psf_axial_fwhm_um = 0.8; o.z_factor = 4; o.poisson_peak = 200;
//   Volume raw = apply_optics(gt, o);      // float32, nz = floor(gt.nz / 4), voxel z * 4
//
// Determinism: the output is a pure function of the parameters. Random numbers come from a
// counter-based generator (splitmix64 of seed and voxel index), so the same seed gives a
// bitwise identical volume on every run and for every thread count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "isoprompt/volume.h"

namespace isoprompt {

/// Small, fast, portable random numbers (splitmix64). Same sequence on every platform,
/// unlike the std:: distributions.
class SplitMix {
 public:
  explicit SplitMix(uint64_t seed = 0) : state_(seed) {}
  uint64_t next();
  double uniform();                        // [0, 1), 53 bits
  double uniform(double lo, double hi);    // [lo, hi)
  int64_t randint(int64_t lo, int64_t hi); // [lo, hi], inclusive
  double normal();                         // standard normal (Box-Muller, no caching)
  uint64_t state() const { return state_; }
  void set_state(uint64_t s) { state_ = s; }

 private:
  uint64_t state_;
};
/// Mixes a 64-bit value (splitmix64 finaliser); hash64(a ^ hash64(b)) combines two keys.
uint64_t hash64(uint64_t x);
inline uint64_t hash_combine(uint64_t a, uint64_t b) { return hash64(a ^ (hash64(b) + 0x9e3779b97f4a7c15ULL)); }

enum class PhantomKind { Mixed, Filaments, Nuclei, Membranes, Puncta, EM };
const char* phantom_kind_name(PhantomKind k);  // "mixed", "filaments", ...
PhantomKind parse_phantom_kind(const std::string& s);  // throws InputError
std::vector<PhantomKind> all_phantom_kinds();

/// What to draw. Counts < 0 mean "automatic": a density scaled to the volume size
/// (for 128^3: 48 filaments, 10 nuclei, 27 cells, 300 puncta).
struct PhantomParams {
  Shape3 size{128, 128, 128};
  PhantomKind kind = PhantomKind::Mixed;
  uint64_t seed = 0;
  VoxelSize voxel{0.1, 0.1, 0.1};  // written into the volume; µm
  int n_filaments = -1;
  int n_nuclei = -1;
  int n_cells = -1;    // Voronoi cells for membranes / EM
  int n_puncta = -1;
};

/// Clean isotropic phantom: float32, (z, y, x) = p.size, values in [0, 1].
/// Kinds:
///   filaments: smooth random 3D curves (half of them mostly lateral), Gaussian cross-section (sigma 0.6-2 voxels),
///              brightness varying along and between curves, on a dim background.
///   nuclei:    non-overlapping textured ellipsoids (radii ~10-24 voxels at 128^3).
///   membranes: walls of a Voronoi tessellation (cell boundaries), textured.
///   puncta:    well separated Gaussian spots and hollow vesicles (exactly n_puncta objects).
///   em:        FIB-SEM-like: grey textured cytoplasm, dark membranes, dark mitochondria and
///              vesicle rings.
///   mixed:     a random subset of filaments, nuclei, membranes and puncta added together.
Volume make_phantom(const PhantomParams& p);

/// Acquisition model applied to a clean volume. All off by default.
struct OpticsParams {
  double psf_lateral_fwhm_um = 0;  // Gaussian PSF FWHM in y and x (µm); 0 = none
  double psf_axial_fwhm_um = 0;    // Gaussian PSF FWHM in z (µm); 0 = none
  double z_factor = 1;             // keep every K-th plane (after the PSF): nz -> floor(nz / K)
  double poisson_peak = 0;         // photons at intensity 1; 0 = no shot noise
  double gaussian_sigma = 0;       // read noise, in intensity units (1 = phantom maximum)
  uint64_t seed = 0;               // noise seed
};
/// Blurs with the PSF (FWHM converted to voxels with v.voxel_size()), samples planes at the
/// cell centres of the coarse z grid ((j + 0.5) K - 0.5, linear interpolation), then adds
/// Poisson and Gaussian noise. Output float32, voxel z multiplied by K.
/// Throws InputError for negative widths/noise or K < 1 or K > nz.
Volume apply_optics(const Volume& v, const OpticsParams& o);

/// In-place separable Gaussian blur of a float32 volume, sigmas in voxels per axis (z, y, x);
/// sigma <= 0 skips the axis. Kernel truncated at 3 sigma, clamp-to-edge boundary.
void gaussian_blur_inplace(Volume& f32, double sigma_z, double sigma_y, double sigma_x);

/// Normalised sampled Gaussian kernel, radius ceil(3 sigma) (at least 1).
std::vector<float> gaussian_kernel(double sigma);

}  // namespace isoprompt
