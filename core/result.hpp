// result<T>: a value or a protocol_error. Bad input is a value, not an exception.
#pragma once

#include <cassert>
#include <utility>
#include <variant>

#include "core/errc.hpp"

namespace ma {

template <class T>
class [[nodiscard]] result {
 public:
  result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  // A T made in place, to be filled through value().
  explicit result(std::in_place_t) : v_(std::in_place_index<0>) {}
  result(protocol_error error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const protocol_error& error() const& { assert(!ok()); return std::get<1>(v_); }
  protocol_error&& error() && { assert(!ok()); return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, protocol_error> v_;
};

}  // namespace ma
