// Progress reporting for long work: a bar with rate and ETA on a terminal,
// plain periodic lines when stderr is a log file. Silent at LogLevel::Quiet.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace isoprompt {

class Progress {
 public:
  // `unit` names what is counted ("slices", "steps"). `already_done` is work finished
  // before this run (a resumed job): it counts towards the bar but not the rate and ETA.
  Progress(std::string label, int64_t total, std::string unit = "it", int64_t already_done = 0);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Sets the count done so far and an optional status text (e.g. "loss 0.031").
  // Also a Ctrl-C safe point: throws Cancelled when interrupted.
  void update(int64_t done, const std::string& status = "");
  void advance(int64_t n = 1, const std::string& status = "") { update(done_ + n, status); }
  void finish(const std::string& status = "");
  double elapsed_seconds() const;

  static std::string format_duration(double seconds);  // "1:02:03" or "2:03"

 private:
  void render(bool final_line);

  std::string label_, unit_, status_;
  int64_t total_ = 0, done_ = 0, already_done_ = 0;
  bool tty_ = false, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_render_;
};

}  // namespace isoprompt
