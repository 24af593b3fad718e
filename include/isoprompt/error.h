// Exceptions thrown by the isoprompt library. The CLI maps them to exit codes:
// InputError (bad user input or usage) -> 2, Cancelled -> 130, any other Error -> 1.
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace isoprompt {

// An internal failure: a bug, or a resource the program could not get.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The user's input is wrong: a missing or malformed file, a bad flag value.
class InputError : public Error {
 public:
  using Error::Error;
};

// A model or prompt file that cannot be loaded as asked (bad key, shape, format).
class CheckpointError : public InputError {
 public:
  using InputError::InputError;
};

// The user pressed Ctrl-C; work stopped at a safe point.
class Cancelled : public Error {
 public:
  Cancelled() : Error("interrupted") {}
};

template <typename... Args>
[[noreturn]] void throw_input(fmt::format_string<Args...> f, Args&&... args) {
  throw InputError(fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
[[noreturn]] void throw_error(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace isoprompt
