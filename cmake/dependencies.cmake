# Finds every external dependency and fails early, naming the Debian package to install.
# scripts/install-deps installs all of them.

function(ma_require found package what)
  if(NOT ${found})
    message(FATAL_ERROR
      "${what} was not found: install the Debian 12 package '${package}' "
      "(scripts/install-deps installs every dependency).")
  endif()
endfunction()

find_package(Threads REQUIRED)

find_package(Boost 1.81 QUIET CONFIG COMPONENTS json system)
ma_require(Boost_FOUND "libboost1.81-dev and libboost-json1.81-dev" "Boost 1.81 with Boost.JSON")

find_package(OpenSSL 3 QUIET)
ma_require(OPENSSL_FOUND libssl-dev "OpenSSL 3")

# The agent library needs only the above; the rest is for the broker, the CLI and the tests.
if(MA_LIBRARY_ONLY)
  return()
endif()

find_package(fmt QUIET CONFIG)
ma_require(fmt_FOUND libfmt-dev "fmt")

find_package(spdlog QUIET CONFIG)
ma_require(spdlog_FOUND libspdlog-dev "spdlog")

find_package(SQLite3 QUIET)
ma_require(SQLite3_FOUND libsqlite3-dev "SQLite 3")

find_package(CLI11 QUIET CONFIG)
ma_require(CLI11_FOUND libcli11-dev "CLI11")

find_package(PkgConfig QUIET)
ma_require(PKG_CONFIG_FOUND pkg-config "pkg-config")
pkg_check_modules(SYSTEMD QUIET IMPORTED_TARGET libsystemd)
ma_require(SYSTEMD_FOUND libsystemd-dev "libsystemd")

pkg_check_modules(SODIUM QUIET IMPORTED_TARGET libsodium)
ma_require(SODIUM_FOUND libsodium-dev "libsodium")

pkg_check_modules(NATS QUIET IMPORTED_TARGET libnats)
ma_require(NATS_FOUND libnats-dev "cnats, the NATS C client")

if(MA_BUILD_TESTS)
  find_package(GTest QUIET CONFIG)
  if(NOT GTest_FOUND)
    find_package(GTest QUIET)
  endif()
  ma_require(GTest_FOUND libgtest-dev "GoogleTest")
  include(GoogleTest)
endif()
