// SPDX-License-Identifier: MIT
// doctest's main(), compiled once into the OBJECT library lbkit_doctest_main and linked into
// every test executable, so each test file compiles only its own cases.
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
