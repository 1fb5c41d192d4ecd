-- llmsoup fallback attempt (upstream filter of a chain's aggregate cluster): runs once per
-- attempt, after Envoy picked the attempt's host. The header_mutation step before it copied
-- the host's model name into __UPSTREAM__ (endpoint metadata). Request headers are shared by
-- all attempts of a request (the body is not: every attempt starts from the routed body), so
-- what must survive an attempt lives in headers: the models tried so far and the first path.
-- Filled in by `llmsoup envoy-config`: the chain's models (provider model id as a JSON string,
-- the provider's path prefix) and the credential headers injected by the chain's providers.
local MODELS = __MODELS__
local CREDENTIAL_HEADERS = __CREDENTIAL_HEADERS__
-- This aggregate cluster's chain's primary: the routed request was written for it.
local PRIMARY = MODELS[__PRIMARY__]

function envoy_on_request(handle)
  local headers = handle:headers()
  local model = headers:get(__UPSTREAM__)
  local this = model and MODELS[model]
  if this == nil then
    return
  end
  local primary = PRIMARY
  local tried = headers:get(__TRIED__)
  headers:replace(__TRIED__, tried and (tried .. "," .. model) or model)
  if tried ~= nil then
    -- An earlier attempt's injected credential must not reach this provider.
    for _, h in ipairs(CREDENTIAL_HEADERS) do
      headers:remove(h)
    end
  end
  if primary == nil or this == primary then
    -- The routed request was written for the primary: nothing to change.
    return
  end
  local path = headers:get(__PATH__)
  if path == nil then
    path = headers:get(":path")
    headers:add(__PATH__, path)
  end
  if this.prefix ~= primary.prefix and string.sub(path, 1, #primary.prefix) == primary.prefix then
    headers:replace(":path", this.prefix .. string.sub(path, #primary.prefix + 1))
  end
  local span = headers:get(__SPAN__)
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
