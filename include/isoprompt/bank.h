// A prompt bank: a folder of tuned prompts and what they were tuned on, so that a new stack
// of a kind already seen starts from the best of them instead of from zero.
//
//   DIR/bank.json                  the index (entries below), replaced atomically
//   DIR/NAME.prompt.safetensors    the prompt files, copied in
//
//   bank_add("bank", "fib25_a.prompt.safetensors", {.tag = "em"});
//   BankChoice c = choose_prompt(open_bank("bank"), stack, backbone, tune_params);
//   if (c.best >= 0) params.resume_from = c.path;   // warm start (or predict with it as is)
#pragma once

#include <string>
#include <vector>

#include "isoprompt/train.h"
#include "isoprompt/volume.h"

namespace isoprompt {

struct BankEntry {
  std::string name;          // unique in the bank; the file is NAME.prompt.safetensors
  std::string tag;           // the kind of data, free text ("em", "nuclei"); may be empty
  std::string source;        // the stack it was tuned on, as given (may be empty)
  VoxelSize voxel{0, 0, 0};  // the source's voxel size (0: unknown)
  std::string unit;
  std::string added;  // UTC date and time it was added, ISO 8601
  PromptInfo info;    // read from the file: backbone, factor, degradation, scores
};

struct PromptBank {
  std::string dir;
  std::vector<BankEntry> entries;
  std::string path(const BankEntry& e) const;  // the entry's prompt file
};

// Reads DIR/bank.json and each entry's prompt metadata. A missing folder or index is an
// empty bank when `must_exist` is false. Throws InputError for an unreadable index or a
// missing prompt file, naming it.
PromptBank open_bank(const std::string& dir, bool must_exist = true);

// Copies `prompt_file` into the bank (creating the folder) and indexes it. `what` gives the
// tag, source and voxel size; its name defaults to the file's stem without
// ".prompt.safetensors"/".safetensors". Refuses (InputError) a file that is not a prompt
// (fully tuned backbones and U-Nets are not banked: they are whole models), and a name
// already in the bank. Returns the new entry.
BankEntry bank_add(const std::string& dir, const std::string& prompt_file, BankEntry what);

// `wanted` made a valid entry name (other characters become '_') that is not yet in `bank`
// ("name", else "name-2", "name-3", ...).
std::string unique_bank_name(const PromptBank& bank, const std::string& wanted);

// Removes entries by name (their files too). Throws InputError naming an unknown one
// before removing anything.
void bank_remove(const std::string& dir, const std::vector<std::string>& names);

// The bank's prompts scored on a new stack's own held-out self-supervised pairs: the very
// pairs tune() would validate on for `vol` and `params` (same split, crops and seed), so a
// warm start's zero-shot line equals the ranking's.
struct BankChoice {
  double zero_shot_psnr = 0, interp_psnr = 0;
  struct Scored {
    std::string name;
    double val_psnr = 0;
  };
  std::vector<Scored> ranking;       // compatible prompts, best first
  std::vector<std::string> skipped;  // "NAME: why" (another backbone)
  int best = -1;                     // index into the bank's entries; -1: none fits
  std::string path;                  // the chosen prompt's file ("" when none)
};

// A prompt fits when it beats the backbone alone on the stack's pairs by at least
// kBankMinGainDb (below that the difference is rounding); the best such one is chosen. Prompts
// tuned for another backbone (by hash) are skipped, not loaded.
constexpr double kBankMinGainDb = 0.01;
BankChoice choose_prompt(const PromptBank& bank, const Volume& vol, Backbone& backbone,
                         const TuneParams& params);

// Validation PSNR on `vol`'s held-out pairs (as tune() draws them for `params`) of each
// prompt file, with the zero-shot and interpolation scores. Defined with tune().
std::vector<double> score_prompts_on_validation(const Volume& vol, Backbone& backbone,
                                                const TuneParams& params,
                                                const std::vector<std::string>& prompt_files,
                                                double* zero_shot_psnr, double* interp_psnr);

}  // namespace isoprompt
