// SPDX-License-Identifier: MIT
// The umbrella header: includes every public lbkit header.
#pragma once

#include "lbkit/backend.hpp"
#include "lbkit/backend_registry.hpp"
#include "lbkit/backend_state.hpp"
#include "lbkit/balancer.hpp"
#include "lbkit/endpoint.hpp"
#include "lbkit/hash.hpp"
#include "lbkit/policy/jump_hash.hpp"
#include "lbkit/policy/least_connections.hpp"
#include "lbkit/policy/maglev.hpp"
#include "lbkit/policy/modulo_hash.hpp"
#include "lbkit/policy/power_of_two_choices.hpp"
#include "lbkit/policy/rendezvous_hash.hpp"
#include "lbkit/policy/ring_hash.hpp"
#include "lbkit/policy/round_robin.hpp"
#include "lbkit/policy/weighted_random.hpp"
#include "lbkit/policy/weighted_round_robin.hpp"
#include "lbkit/result.hpp"
#include "lbkit/selection_policy.hpp"
#include "lbkit/version.hpp"
