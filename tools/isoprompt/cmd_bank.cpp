// isoprompt bank add | list | remove: the prompt bank (isoprompt/bank.h).
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "commands.h"
#include "isoprompt/bank.h"
#include "isoprompt/error.h"

namespace isoprompt::cli {

namespace {

std::string num(double v) {
  return fmt::format("{:.6g}", v);
}

struct BankArgs {
  std::string dir, name, tag, source, voxel;
  std::vector<std::string> items;  // prompt files (add) or entry names (remove)
};

void run_add(const BankArgs& a) {
  apply_globals();
  if (!a.name.empty() && a.items.size() > 1)
    throw_input("--name names one entry, but {} prompt files were given", a.items.size());
  BankEntry what;
  what.name = a.name;
  what.tag = a.tag;
  what.source = a.source;
  if (!a.voxel.empty()) {
    double zyx[3];
    parse_triple(a.voxel, "--voxel", zyx);
    what.voxel = {zyx[0], zyx[1], zyx[2]};
  }
  for (const std::string& file : a.items) {
    const BankEntry e = bank_add(a.dir, file, what);
    std::printf("added %s to %s as '%s' (factor %s, backbone %s, validation %s dB)\n", file.c_str(),
                a.dir.c_str(), e.name.c_str(), num(e.info.factor).c_str(),
                e.info.backbone_name.c_str(), num(e.info.val_psnr).c_str());
  }
}

void run_list(const BankArgs& a) {
  apply_globals();
  const PromptBank bank = open_bank(a.dir);
  std::printf("%s: %zu prompt%s\n", a.dir.c_str(), bank.entries.size(),
              bank.entries.size() == 1 ? "" : "s");
  if (bank.entries.empty()) return;
  std::printf("%-24s %-10s %7s %-8s %-12s %9s %9s %9s  %s\n", "name", "tag", "factor", "degrade",
              "backbone", "val dB", "vs 0-shot", "vs interp", "source (voxel z,y,x)");
  for (const BankEntry& e : bank.entries) {
    const PromptInfo& i = e.info;
    const std::string voxel = e.voxel.z > 0 ? fmt::format(" ({},{},{} {})", num(e.voxel.z),
                                                          num(e.voxel.y), num(e.voxel.x), e.unit)
                                            : std::string();
    std::printf("%-24s %-10s %7s %-8s %-12s %9.2f %+9.2f %+9.2f  %s%s\n", e.name.c_str(),
                e.tag.empty() ? "-" : e.tag.c_str(), num(i.factor).c_str(),
                degrade_model_name(i.degrade.model), i.backbone_hash.substr(0, 12).c_str(),
                i.val_psnr, i.val_psnr - i.zero_shot_psnr, i.val_psnr - i.interp_psnr,
                e.source.empty() ? "-" : e.source.c_str(), voxel.c_str());
  }
}

void run_remove(const BankArgs& a) {
  apply_globals();
  bank_remove(a.dir, a.items);
  for (const std::string& n : a.items)
    std::printf("removed '%s' from %s\n", n.c_str(), a.dir.c_str());
}

}  // namespace

void register_bank_commands(CLI::App& app) {
  auto* bank = app.add_subcommand(
      "bank", "keep tuned prompts to reuse: `restore --bank DIR` starts from the best fitting one");
  bank->require_subcommand(1);
  {
    auto a = std::make_shared<BankArgs>();
    auto* c = bank->add_subcommand("add", "copy prompt files into a bank (created if missing)");
    c->add_option("dir", a->dir, "bank folder")->required();
    c->add_option("prompts", a->items, "prompt files from `tune` / `restore --prompt-out`")
        ->required();
    c->add_option("--name", a->name, "entry name (default: the file's stem)");
    c->add_option("--tag", a->tag, "kind of data, free text (e.g. em, nuclei)");
    c->add_option("--source", a->source, "the stack the prompt was tuned on (for the record)");
    c->add_option("--voxel", a->voxel, "the source's voxel size z,y,x (for the record)");
    c->callback([a] { run_add(*a); });
  }
  {
    auto a = std::make_shared<BankArgs>();
    auto* c = bank->add_subcommand("list", "list a bank's prompts and their scores");
    c->add_option("dir", a->dir, "bank folder")->required();
    c->callback([a] { run_list(*a); });
  }
  {
    auto a = std::make_shared<BankArgs>();
    auto* c = bank->add_subcommand("remove", "remove entries (and their files) from a bank");
    c->add_option("dir", a->dir, "bank folder")->required();
    c->add_option("names", a->items, "entry names (see `bank list`)")->required();
    c->callback([a] { run_remove(*a); });
  }
}

}  // namespace isoprompt::cli
