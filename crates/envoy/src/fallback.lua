-- llmsoup fallback attempt (upstream filter of a chain's aggregate cluster): runs once per
-- attempt, after Envoy picked the attempt's host. The header_mutation step before it copied
-- the host's model name into __UPSTREAM__ (endpoint metadata).
--
-- Request headers are shared by all attempts of a request (the body is not: every attempt
-- starts from the routed body), and whatever is in them reaches the provider. So what must
-- outlive an attempt — the attempts so far and how each was answered, the model's byte span in
-- the body, the first attempt's path — lives in the request's dynamic metadata (namespace
-- __NS__): an upstream filter's streamInfo() is the downstream request's, kept across
-- attempts and never sent upstream. The sidecar's span header is moved there by the first
-- attempt and removed.
-- Filled in by `llmsoup envoy-config`: the chain's models (provider model id as a JSON string,
-- the provider's path prefix) and the credential headers injected by the chain's providers.
local MODELS = __MODELS__
local CREDENTIAL_HEADERS = __CREDENTIAL_HEADERS__
-- This aggregate cluster's chain's primary: the routed request was written for it.
local PRIMARY = MODELS[__PRIMARY__]
local NS = __NS__

function envoy_on_request(handle)
  local headers = handle:headers()
  local span = headers:get(__SPAN__)
  if span ~= nil then
    headers:remove(__SPAN__)
  end
  local model = headers:get(__UPSTREAM__)
  local this = model and MODELS[model]
  if this == nil then
    return
  end
  local metadata = handle:streamInfo():dynamicMetadata()
  local state = metadata:get(NS) or {}
  local tried = state["attempts"]
  local path = state["path"] or headers:get(":path")
  span = state["span"] or span
  if tried == nil then
    if span ~= nil then
      metadata:set(NS, "span", span)
    end
    metadata:set(NS, "path", path)
  else
    -- An earlier attempt's injected credential must not reach this provider.
    for _, h in ipairs(CREDENTIAL_HEADERS) do
      headers:remove(h)
    end
  end
  metadata:set(NS, "attempts", tried and (tried .. "," .. model) or model)
  local primary = PRIMARY
  if primary == nil then
    return
  end
  -- The path as written for the primary, rewritten to this attempt's provider (an earlier
  -- attempt may have rewritten the shared header for another one).
  if string.sub(path, 1, #primary.prefix) == primary.prefix then
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

-- Every attempt's answer (a failed one too, before the router decides to retry) adds how it was
-- answered to the attempts list and says the list so far in __ATTEMPTS__: the answer the client
-- gets carries every attempt. A non-2xx adds `;status`, and its `retry-after` (with `%`, `,`
-- and `;` percent-encoded: an HTTP date has a comma) `;value`.
function envoy_on_response(handle)
  local metadata = handle:streamInfo():dynamicMetadata()
  local state = metadata:get(NS)
  local tried = state and state["attempts"]
  if tried == nil then
    return
  end
  local headers = handle:headers()
  local status = headers:get(":status")
  if status ~= nil and string.sub(status, 1, 1) ~= "2" then
    tried = tried .. ";" .. status
    local retry_after = headers:get("retry-after")
    if retry_after ~= nil then
      tried = tried .. ";" .. string.gsub(retry_after, "[%%,;]", function(c)
        return string.format("%%%02X", string.byte(c))
      end)
    end
    metadata:set(NS, "attempts", tried)
  end
  headers:replace(__ATTEMPTS__, tried)
end
