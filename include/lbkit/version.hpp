// SPDX-License-Identifier: MIT
// lbkit version. CMake reads the three numbers below for project(VERSION ...), so keep the
// format of these lines as it is.
#pragma once

#define LBKIT_VERSION_MAJOR 0
#define LBKIT_VERSION_MINOR 1
#define LBKIT_VERSION_PATCH 0

// One integer that grows with every release: MAJOR * 10000 + MINOR * 100 + PATCH.
#define LBKIT_VERSION \
  (LBKIT_VERSION_MAJOR * 10000 + LBKIT_VERSION_MINOR * 100 + LBKIT_VERSION_PATCH)
