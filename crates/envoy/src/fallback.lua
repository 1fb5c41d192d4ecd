-- llmsoup fallback attempt (upstream filter of a chain's aggregate cluster): runs once per
-- attempt, after Envoy picked the attempt's host. The header_mutation step before it copied
-- the host's model name into __UPSTREAM__ (endpoint metadata).
--
-- Request headers are shared by all attempts of a request (the body is not: every attempt
-- starts from the routed body), and whatever is in them reaches the provider. So what must
-- outlive an attempt — the attempts so far and how each was answered, the model's byte span in
-- the body, the first attempt's path — lives in the request's dynamic metadata (namespace
-- NS, one struct under KEY, written once per attempt): an upstream filter's
-- streamInfo() is the downstream request's, kept across attempts and never sent upstream. The
-- sidecar's span header is moved there by the first attempt and removed.
--
-- The answer's attempts header is not set here: the header_mutation step before this one
-- formats it from the metadata (`%DYNAMIC_METADATA(NS:KEY:attempts)%`), and runs on
-- the response after this step. A 2xx answer skips this step's response hook altogether
-- (match_delegate on `:status`): only a failed attempt's answer is recorded here.
-- Filled in by `llmsoup envoy-config`: the chain's models (provider model id as a JSON string,
-- the provider's path prefix) and the credential headers injected by the chain's providers.
local MODELS = __MODELS__
local CREDENTIAL_HEADERS = __CREDENTIAL_HEADERS__
-- This aggregate cluster's chain's primary: the routed request was written for it.
local PRIMARY = MODELS[__PRIMARY__]
local NS = __NS__
local KEY = __KEY__

function envoy_on_request(handle)
  local headers = handle:headers()
  local model = headers:get(__UPSTREAM__)
  local this = model and MODELS[model]
  if this == nil then
    return
  end
  local metadata = handle:streamInfo():dynamicMetadata()
  local ns = metadata:get(NS)
  local state = ns and ns[KEY]
  local path, span
  if state == nil then
    -- The first attempt: the path and span as the sidecar left them.
    path = headers:get(":path")
    span = headers:get(__SPAN__)
    if span ~= nil then
      headers:remove(__SPAN__)
    end
    state = {attempts = model, path = path, span = span}
  else
    path = state["path"]
    span = state["span"]
    state["attempts"] = state["attempts"] .. "," .. model
    -- An earlier attempt's injected credential must not reach this provider.
    for _, h in ipairs(CREDENTIAL_HEADERS) do
      headers:remove(h)
    end
  end
  metadata:set(NS, KEY, state)
  local primary = PRIMARY
  if primary == nil or path == nil then
    return
  end
  -- The path as written for the primary, rewritten to this attempt's provider (an earlier
  -- attempt may have rewritten the shared header for another one).
  if this.prefix ~= primary.prefix and string.sub(path, 1, #primary.prefix) == primary.prefix then
    path = this.prefix .. string.sub(path, #primary.prefix + 1)
  end
  if headers:get(":path") ~= path then
    headers:replace(":path", path)
  end
  if this == primary then
    -- The routed body was written for the primary: nothing to change.
    return
  end
  local first, last = string.match(span or "", "^(%d+)-(%d+)$")
  if first == nil then
    return
  end
  local body = handle:body()
  if body == nil then
    return
  end
  local bytes = body:getBytes(0, body:length())
  first, last = tonumber(first), tonumber(last)
  if last > #bytes or string.sub(bytes, first + 1, first + 1) ~= '"' then
    return
  end
  body:setBytes(string.sub(bytes, 1, first) .. this.id .. string.sub(bytes, last + 1))
end

-- A failed attempt's answer (a non-2xx, before the router decides to retry; a 2xx skips this)
-- adds `;status` to its attempt, and its `retry-after` (with `%`, `,` and `;` percent-encoded:
-- an HTTP date has a comma) `;value`: the answer the client gets carries every attempt.
function envoy_on_response(handle)
  local headers = handle:headers()
  local status = headers:get(":status")
  if status == nil or string.sub(status, 1, 1) == "2" then
    return
  end
  local metadata = handle:streamInfo():dynamicMetadata()
  local ns = metadata:get(NS)
  local state = ns and ns[KEY]
  if state == nil or state["attempts"] == nil then
    return
  end
  local tried = state["attempts"] .. ";" .. status
  local retry_after = headers:get("retry-after")
  if retry_after ~= nil then
    tried = tried .. ";" .. string.gsub(retry_after, "[%%,;]", function(c)
      return string.format("%%%02X", string.byte(c))
    end)
  end
  state["attempts"] = tried
  metadata:set(NS, KEY, state)
end
