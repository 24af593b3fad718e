// Subcommand registration for the isoprompt CLI. Each cmd_*.cpp parses its flags,
// fills a library params struct, calls the library, and prints.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace isoprompt::cli {

struct GlobalOptions {
  int threads = 0;           // 0 = all cores
  bool quiet = false;
  bool verbose = false;
  std::string device = "cpu";  // torch device string: cpu, cuda, cuda:1
};
GlobalOptions& globals();

// Applies the global options (threads, log level). Called by every subcommand first.
void apply_globals();

void register_io_commands(CLI::App& app);      // info, convert
void register_ops_commands(CLI::App& app);     // simulate, baseline, eval
void register_model_commands(CLI::App& app);   // model info|convert|apply
void register_tune_command(CLI::App& app);     // tune
void register_method_commands(CLI::App& app);  // predict, restore
void register_demo_commands(CLI::App& app);    // phantom, pretrain, demo
void register_bank_commands(CLI::App& app);    // bank add|list|remove
void register_report_command(CLI::App& app);   // report

// Parses "a,b,c" into three doubles (z,y,x order) or throws InputError naming `flag`.
void parse_triple(const std::string& text, const std::string& flag, double out[3]);

}  // namespace isoprompt::cli
