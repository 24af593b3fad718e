// Logging facade. The library never prints directly; the CLI chooses the sink.
#pragma once

#include <functional>
#include <string>

#include <fmt/format.h>

namespace isoprompt {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3, Quiet = 4 };

void set_log_level(LogLevel l);
LogLevel log_level();
// Replaces the sink (default: stderr). Used by tests to capture messages.
void set_log_sink(std::function<void(LogLevel, const std::string&)> sink);
void log_message(LogLevel l, const std::string& msg);

template <typename... Args>
void log_info(fmt::format_string<Args...> f, Args&&... a) {
  if (log_level() <= LogLevel::Info) log_message(LogLevel::Info, fmt::format(f, std::forward<Args>(a)...));
}
template <typename... Args>
void log_warn(fmt::format_string<Args...> f, Args&&... a) {
  if (log_level() <= LogLevel::Warn) log_message(LogLevel::Warn, fmt::format(f, std::forward<Args>(a)...));
}
template <typename... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... a) {
  if (log_level() <= LogLevel::Debug) log_message(LogLevel::Debug, fmt::format(f, std::forward<Args>(a)...));
}

}  // namespace isoprompt
