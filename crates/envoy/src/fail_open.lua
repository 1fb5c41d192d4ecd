-- llmsoup fail-open step (ext_proc mode). Runs after the ext_proc filter. When the sidecar
-- answered, it set x-llmsoup-model and this script does nothing. When the sidecar was down or
-- too slow, Envoy continued without it: the body still says "model": "auto", which no provider
-- accepts, so rewrite it (JSON-aware, top-level "model" only) to the default model's provider
-- id, or keep a concrete configured model, and mark the response.

local MODELS = __MODELS__          -- name -> provider model id
local DEFAULT_MODEL = __DEFAULT__  -- model name used for anything else
local ROUTE_HEADER = __ROUTE_HEADER__  -- the header model routes match on

-- Index just past the string literal starting at i (a double quote), or nil.
local function skip_string(s, i)
  i = i + 1
  local n = #s
  while i <= n do
    local c = s:byte(i)
    if c == 92 then
      i = i + 2
    elseif c == 34 then
      return i + 1
    else
      i = i + 1
    end
  end
  return nil
end

local function skip_ws(s, i)
  local n = #s
  while i <= n do
    local c = s:byte(i)
    if c ~= 32 and c ~= 9 and c ~= 10 and c ~= 13 then return i end
    i = i + 1
  end
  return i
end

-- Span [start, stop) of the top-level "model" string value, or nil.
local function find_model(s)
  local i = skip_ws(s, 1)
  if s:byte(i) ~= 123 then return nil end
  local depth, n, expect_key = 1, #s, true
  i = i + 1
  while i <= n do
    local c = s:byte(i)
    if c == 34 then
      local j = skip_string(s, i)
      if not j then return nil end
      if depth == 1 and expect_key then
        local key = s:sub(i + 1, j - 2)
        local k = skip_ws(s, j)
        if s:byte(k) ~= 58 then return nil end
        k = skip_ws(s, k + 1)
        if key == "model" then
          if s:byte(k) ~= 34 then return nil end
          local e = skip_string(s, k)
          if not e then return nil end
          return k, e
        end
        expect_key = false
        i = k
      else
        i = j
      end
    elseif c == 123 or c == 91 then
      depth = depth + 1
      i = i + 1
    elseif c == 125 or c == 93 then
      depth = depth - 1
      i = i + 1
    elseif c == 44 and depth == 1 then
      expect_key = true
      i = i + 1
    else
      i = i + 1
    end
  end
  return nil
end

local function json_string(v)
  return '"' .. v:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:get("x-llmsoup-model") ~= nil then return end
  if headers:get(":method") ~= "POST" then return end
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  local bytes = body:getBytes(0, body:length())
  local start, stop = find_model(bytes)
  if start == nil then return end
  local requested = bytes:sub(start + 1, stop - 2)
  local model = DEFAULT_MODEL
  if MODELS[requested] ~= nil then model = requested end
  local rewritten = bytes:sub(1, start - 1) .. json_string(MODELS[model]) .. bytes:sub(stop)
  body:setBytes(rewritten)
  -- body() may yield; header handles taken before it are no longer valid.
  headers = handle:headers()
  headers:replace("content-length", tostring(#rewritten))
  headers:replace("x-llmsoup-model", model)
  headers:replace(ROUTE_HEADER, model)
  handle:clearRouteCache()
  handle:streamInfo():dynamicMetadata():set("llmsoup", "fail_open_model", model)
  handle:logWarn("llmsoup sidecar unavailable: fail-open to model " .. model)
end

function envoy_on_response(handle)
  local meta = handle:streamInfo():dynamicMetadata():get("llmsoup")
  if meta == nil or meta["fail_open_model"] == nil then return end
  handle:headers():replace("x-llmsoup-model", meta["fail_open_model"])
  handle:headers():replace("x-llmsoup-decision", "fail-open")
end
