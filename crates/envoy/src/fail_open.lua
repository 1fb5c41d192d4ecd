-- llmsoup fail-open step (ext_proc mode). Runs after the ext_proc filter. When the sidecar
-- answered, it set x-llmsoup-model (or replied) and this script does nothing. When the sidecar was
-- down or too slow, Envoy continued without it: the body still says "model": "auto", which no
-- provider accepts, so rewrite it to the default model's provider id, or keep a concrete
-- configured model, and mark the response.
--
-- The body is parsed as strictly as the sidecar parses it (serde_json): the whole body must be
-- one valid JSON object, top-level keys are compared decoded (`mod\u0065l` is `model`), a
-- top-level key given twice is refused (providers disagree on which one wins), and `model` must
-- be a string (null counts as missing). Anything else gets the sidecar's 400, never a provider: a POST this step cannot
-- route is answered here, and requests that are not POSTs find no provider route in Envoy's
-- route table.

local MODELS = __MODELS__          -- name -> provider model id
local DEFAULT_MODEL = __DEFAULT__  -- model name used for anything else
local ROUTE_HEADER = __ROUTE_HEADER__  -- the header model routes match on

local byte, sub, find, char, concat = string.byte, string.sub, string.find, string.char, table.concat

-- serde_json's recursion limit.
local MAX_DEPTH = 128

local function fail(code)
  error(code, 0)
end

local function skip_ws(s, i)
  local _, e = find(s, "^[ \t\n\r]*", i)
  return e + 1
end

-- Index past the UTF-8 sequence starting at i (a byte >= 0x80), or fails: serde_json reads
-- only valid UTF-8 (no overlongs, no surrogates, nothing past U+10FFFF).
local function utf8_next(s, i)
  local c, c1 = byte(s, i, i + 1)
  local n
  if c >= 0xC2 and c <= 0xDF then
    n = 1
  elseif c >= 0xE0 and c <= 0xEF then
    n = 2
  elseif c >= 0xF0 and c <= 0xF4 then
    n = 3
  else
    fail("invalid_json")
  end
  if c1 == nil or (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 > 0x9F)
      or (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 > 0x8F) then
    fail("invalid_json")
  end
  for k = 1, n do
    local b = byte(s, i + k)
    if b == nil or b < 0x80 or b > 0xBF then fail("invalid_json") end
  end
  return i + n + 1
end

local function utf8_encode(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40) end
  if cp < 0x10000 then
    return char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
    0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local ESCAPES = {[34] = '"', [92] = "\\", [47] = "/", [98] = "\b", [102] = "\f", [110] = "\n",
  [114] = "\r", [116] = "\t"}

local function hex4(s, i)
  local h = sub(s, i, i + 3)
  if not find(h, "^%x%x%x%x$") then fail("invalid_json") end
  return tonumber(h, 16)
end

-- The string literal at i (a double quote): returns the index past it and, with `decode`, its
-- value. Plain runs are skipped with one pattern search each.
local function parse_string(s, i, decode)
  local parts = decode and {} or nil
  i = i + 1
  while true do
    local j = find(s, '[%z\1-\31"\\\128-\255]', i)
    if j == nil then fail("invalid_json") end
    if parts and j > i then parts[#parts + 1] = sub(s, i, j - 1) end
    local c = byte(s, j)
    if c == 34 then
      return j + 1, parts and concat(parts)
    elseif c < 32 then
      fail("invalid_json")
    elseif c == 92 then
      local e = byte(s, j + 1)
      if e == 117 then
        local cp = hex4(s, j + 2)
        i = j + 6
        if decode then
          -- Keys are compared decoded: a surrogate pair is one character, a lone one an error.
          if cp >= 0xD800 and cp <= 0xDBFF then
            if sub(s, i, i + 1) ~= "\\u" then fail("invalid_json") end
            local lo = hex4(s, i + 2)
            if lo < 0xDC00 or lo > 0xDFFF then fail("invalid_json") end
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
            i = i + 6
          elseif cp >= 0xDC00 and cp <= 0xDFFF then
            fail("invalid_json")
          end
          parts[#parts + 1] = utf8_encode(cp)
        end
      else
        local v = ESCAPES[e]
        if v == nil then fail("invalid_json") end
        if parts then parts[#parts + 1] = v end
        i = j + 2
      end
    else
      local k = utf8_next(s, j)
      if parts then parts[#parts + 1] = sub(s, j, k - 1) end
      i = k
    end
  end
end

local function parse_number(s, i)
  local j = i
  if byte(s, j) == 45 then j = j + 1 end
  local c = byte(s, j)
  if c == 48 then
    j = j + 1
  elseif c ~= nil and c >= 49 and c <= 57 then
    local _, e = find(s, "^%d*", j + 1)
    j = e + 1
  else
    fail("invalid_json")
  end
  if byte(s, j) == 46 then
    local _, e = find(s, "^%d+", j + 1)
    if e == nil then fail("invalid_json") end
    j = e + 1
  end
  c = byte(s, j)
  if c == 101 or c == 69 then
    j = j + 1
    c = byte(s, j)
    if c == 43 or c == 45 then j = j + 1 end
    local _, e = find(s, "^%d+", j)
    if e == nil then fail("invalid_json") end
    j = e + 1
  end
  return j
end

local parse_value

-- The object at i; with `members`, records each decoded top-level key's value span [start, stop).
local function parse_object(s, i, depth, members)
  i = skip_ws(s, i + 1)
  if byte(s, i) == 125 then return i + 1 end
  while true do
    if byte(s, i) ~= 34 then fail("invalid_json") end
    local j, key = parse_string(s, i, members ~= nil)
    i = skip_ws(s, j)
    if byte(s, i) ~= 58 then fail("invalid_json") end
    i = skip_ws(s, i + 1)
    local start = i
    i = parse_value(s, i, depth)
    if members then
      if members[key] ~= nil then fail("invalid_json") end
      members[key] = {start, i}
    end
    i = skip_ws(s, i)
    local c = byte(s, i)
    if c == 125 then return i + 1 end
    if c ~= 44 then fail("invalid_json") end
    i = skip_ws(s, i + 1)
  end
end

local function parse_array(s, i, depth)
  i = skip_ws(s, i + 1)
  if byte(s, i) == 93 then return i + 1 end
  while true do
    i = skip_ws(s, parse_value(s, i, depth))
    local c = byte(s, i)
    if c == 93 then return i + 1 end
    if c ~= 44 then fail("invalid_json") end
    i = skip_ws(s, i + 1)
  end
end

local function literal(s, i, word)
  if sub(s, i, i + #word - 1) ~= word then fail("invalid_json") end
  return i + #word
end

parse_value = function(s, i, depth)
  local c = byte(s, i)
  if c == 123 or c == 91 then
    if depth >= MAX_DEPTH then fail("invalid_json") end
    if c == 123 then return parse_object(s, i, depth + 1, nil) end
    return parse_array(s, i, depth + 1)
  elseif c == 34 then
    return (parse_string(s, i, false))
  elseif c == 116 then
    return literal(s, i, "true")
  elseif c == 102 then
    return literal(s, i, "false")
  elseif c == 110 then
    return literal(s, i, "null")
  end
  return parse_number(s, i)
end

-- The whole body as one JSON object: its top-level members, or fails with an error code.
local function top_level(s)
  local i = skip_ws(s, 1)
  if byte(s, i) ~= 123 then fail("invalid_json") end
  local members = {}
  i = skip_ws(s, parse_object(s, i, 1, members))
  if i <= #s then fail("invalid_json") end
  return members
end

-- error code -> the sidecar's 400 body, rendered from llmsoup-contract (FailOpenError::body)
local REFUSALS = __REFUSALS__

local function json_string(v)
  return '"' .. v:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

-- The request model and the span of its value, or fails with the sidecar's error code.
local function find_model(bytes)
  local members = top_level(bytes)
  local span = members["model"]
  -- `"model": null` is no model, as the sidecar reads it.
  if span == nil or byte(bytes, span[1]) == 110 then fail("missing_model") end
  if byte(bytes, span[1]) ~= 34 then fail("invalid_model") end
  local _, requested = parse_string(bytes, span[1], true)
  return requested, span[1], span[2]
end

local function refuse(handle, code)
  local body = REFUSALS[code] or REFUSALS.invalid_json
  handle:respond({[":status"] = "400", ["content-type"] = "application/json",
    ["x-llmsoup-decision"] = "fail-open"}, body)
end

function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:get("x-llmsoup-model") ~= nil then return end
  -- Not a POST: no provider route matches it; Envoy's route table answers (404/405/503).
  if headers:get(":method") ~= "POST" then return end
  local body = handle:body()
  local bytes = ""
  if body ~= nil and body:length() > 0 then bytes = body:getBytes(0, body:length()) end
  local ok, requested, start, stop = pcall(find_model, bytes)
  if not ok then
    handle:logWarn("llmsoup sidecar unavailable: fail-open refused the body (" .. tostring(requested) .. ")")
    return refuse(handle, requested)
  end
  local model = DEFAULT_MODEL
  if MODELS[requested] ~= nil then model = requested end
  local rewritten = sub(bytes, 1, start - 1) .. json_string(MODELS[model]) .. sub(bytes, stop)
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
