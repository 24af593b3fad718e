// The whole job behind `isoprompt restore` and `isoprompt predict`:
// read -> normalise -> (tune) -> reconstruct -> write, with the checks, the fallback to
// interpolation and the provenance written into the output, in one place. Every front end
// (the CLI, a Python binding, the MPI runner) runs these steps and gets the same result.
//
//   RestoreJob job;
//   job.input = "stack.tif";
//   job.output = "stack_iso.ome.tif";
//   RestoreOutcome r = run_restore_job(job);  // tunes a prompt on the stack, then reconstructs
//   // r.written: what the output holds (r.fell_back: the interpolation, and why in its notes)
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "isoprompt/bank.h"
#include "isoprompt/infer.h"
#include "isoprompt/io.h"
#include "isoprompt/report.h"
#include "isoprompt/train.h"

namespace isoprompt {

// How the output is made: a prompt on the frozen backbone, the backbone alone, a fully
// fine-tuned backbone, CARE's U-Net (no backbone), or interpolation only.
enum class Method { Prompt, ZeroShot, Full, UNet, Interp };
const char* method_name(Method m);          // "prompt", "zero-shot", "full", "unet", "interp"
Method parse_method(const std::string& s);  // throws InputError naming --mode

struct RestoreJob {
  std::string input;        // any volume read_volume reads (TIFF, OME-Zarr, file.h5:/dataset)
  std::string output;       // any volume write_volume writes
  std::string uncertainty;  // optional: also write the uncertainty map here
  std::string report;       // optional: also write the QC report (report.h) here, .html
  std::string backbone;     // model file; empty: the shipped default (unused by unet, interp)

  // Tune on the stack itself (restore), or reconstruct with `prompt` (predict).
  bool tune = true;
  std::string prompt;      // predict: a file from `tune` / `restore --prompt-out`
  std::string prompt_out;  // restore: also save the tuned state here
  Method method = Method::Prompt;
  // predict: `method` was not chosen by the user, so a tuned file's own mode decides.
  bool method_from_file = false;

  ReadOptions read;
  double factor = 0;             // z upsampling factor K; 0 = z-step / xy-pixel
  std::optional<Interp> interp;  // unset: the prompt's, else the backbone's input interp
  Fuse fuse = Fuse::Mean;
  int64_t tile = 0, overlap = -1, batch = 0;  // 0 / -1: automatic (see ReconstructParams)
  double tile_memory_gb = 4.0;  // working memory of one forward pass (automatic tiles)
  // Host memory for the whole job, GB; 0: half of the machine's memory. A job that would
  // need more in memory is streamed: read box by box, reconstructed slab by slab through a
  // scratch directory, written chunk by chunk (docs/streaming.md).
  double max_memory_gb = 0;
  // Where the streamed job keeps its scratch stores ("": beside the output). A rerun of an
  // interrupted job continues from what its scratch directory holds.
  std::string scratch;
  std::optional<DType> out_dtype;  // unset: the input's
  bool tta = false;
  // restore: write the interpolation when the tuned model is not better on the stack's
  // held-out pairs (false: write the model's result, with a warning in the file).
  bool fallback_to_interp = true;
  TuneParams tune_params;  // restore: factor, interp and device are set from the fields here
  // restore, --mode prompt: a prompt bank (bank.h). The best fitting prompt on the stack's
  // held-out pairs is the warm start (with 0 steps: the result); none fitting: a cold start.
  std::string bank;
  bool bank_add = false;  // also add the tuned prompt to `bank` (when it beat interpolation)
  std::string bank_name, bank_tag;  // its entry name (default: the input's stem) and tag
  c10::Device device = c10::Device(c10::kCPU);
};

// One volume the job wrote.
struct WrittenVolume {
  std::string path;
  Shape3 shape;
  DType dtype = DType::F32;
  VoxelSize voxel;
  std::string unit;
};

struct RestoreOutcome {
  Method method = Method::Prompt;  // what the output is: Interp after a fallback
  bool fell_back = false;          // restore wrote the interpolation instead of the model
  bool tuned = false;              // `info`, the curves and the scores come from tuning here
  bool have_info = false;          // `info` is filled (tuned, or read from job.prompt)
  PromptInfo info;
  std::vector<std::pair<int64_t, double>> val_history, loss_history;  // tuning curves
  bool saved_prompt = false;                                          // job.prompt_out was written
  Interp interp = Interp::BSpline3;                                   // the z interpolation used
  Fuse fuse = Fuse::Mean;
  ReconstructReport report;
  bool streamed = false;  // the job did not fit max_memory_gb and was streamed
  bool resumed = false;   // streamed, continuing an interrupted run's scratch directory
  WrittenVolume written;
  bool wrote_uncertainty = false;
  WrittenVolume uncertainty;
  double uncertainty_mean = 0, uncertainty_max = 0;
  FileNotes notes;         // the provenance written into the output
  bool used_bank = false;  // job.bank was scored: `bank_choice` holds the ranking
  BankChoice bank_choice;
  std::string banked_as;         // the entry name job.bank_add created ("" when none)
  bool wrote_report = false;     // job.report was written
  ReportMetrics report_metrics;  // the numbers it shows (self-consistency, ground truth)
};

// Validates everything that needs no reading (flags, ranges, output paths against every
// input of the job). Throws InputError naming the flag or file. run_restore_job calls it.
void check_restore_job(const RestoreJob& job);

// Runs the job. Models are loaded before the stack is read, so a bad model file fails
// before a large read. Throws InputError for bad input, Cancelled on Ctrl-C (after saving
// a tuned state that finished at least one evaluation to job.prompt_out), and writes
// nothing under job.output unless it succeeds.
RestoreOutcome run_restore_job(const RestoreJob& job);

// The shipped backbone: isoprompt-default.safetensors in $ISOPROMPT_MODELS, else in the
// source tree's models/ folder. Throws InputError naming where it looked.
std::string default_backbone_path();

// What the uncertainty map of a reconstruction is, for its file's provenance.
std::string uncertainty_definition(bool tta);

}  // namespace isoprompt
