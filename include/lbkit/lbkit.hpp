// SPDX-License-Identifier: MIT
// The umbrella header: includes every public lbkit header.
#pragma once

#include "lbkit/backend.hpp"
#include "lbkit/backend_registry.hpp"
#include "lbkit/backend_state.hpp"
#include "lbkit/endpoint.hpp"
#include "lbkit/hash.hpp"
#include "lbkit/result.hpp"
#include "lbkit/version.hpp"
