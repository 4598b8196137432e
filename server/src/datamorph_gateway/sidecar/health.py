"""The Lua filter that gives REST ``GET /health`` the contract's shape when unhealthy.

The Health RPC answers UNAVAILABLE when the gateway is unhealthy, with the
``HealthResponse`` packed in the status details; the transcoder turns that into a 503
whose body is the ``google.rpc.Status``. The contract wants the ``HealthResponse`` itself
(``{"status": "unhealthy", "checks": {...}, "version"}``), so this filter lifts it out of
the details. When the gateway did not answer at all (Envoy's own 5xx: not reachable, timed
out), it answers the same shape with one failing check, ``gateway``, so a monitor reading
``/health`` always finds ``status``. Every 5xx of REST ``/health`` becomes a 503.

Envoy has no JSON library for Lua, so the filter finds the detail by its ``@type`` (the
transcoder prints it first in each detail object) and cuts the object out with a scanner
that respects JSON strings. It runs only for REST ``GET /health`` requests (gRPC callers of
Health get the status untouched) and reads the body only of those responses' 5xx, so it
costs nothing elsewhere. It must sit before the transcoder in the filter chain: encoders run
in reverse, so it sees the transcoded JSON.

Envoy's Lua objects live only until the script next yields: ``body()`` waits for the whole
body, so a headers object taken before it must not be used after it (Envoy then logs
"object used outside of proper scope" and skips the rest); the filter asks for the headers
again once it has the body.
"""

from __future__ import annotations

__all__ = ["HEALTH_LUA"]

HEALTH_LUA = r"""-- REST GET /health: when unhealthy, answer the HealthResponse itself.
local NS = "datamorph.health"
local DETAIL = '{"@type":"type.googleapis.com/datamorph.gateway.v1.HealthResponse"'

function envoy_on_request(request_handle)
  local headers = request_handle:headers()
  local path = headers:get(":path") or ""
  local content_type = headers:get("content-type") or ""
  if headers:get(":method") == "GET"
      and (path == "/health" or path:sub(1, 8) == "/health?")
      and content_type:sub(1, 16) ~= "application/grpc" then
    request_handle:streamInfo():dynamicMetadata():set(NS, "rest", true)
  end
end

-- The index of the character closing the JSON object or array opened at i.
local function closing(s, i)
  local depth, in_string, escaped = 0, false, false
  for j = i, #s do
    local c = s:sub(j, j)
    if in_string then
      if escaped then escaped = false
      elseif c == "\\" then escaped = true
      elseif c == '"' then in_string = false end
    elseif c == '"' then in_string = true
    elseif c == "{" or c == "[" then depth = depth + 1
    elseif c == "}" or c == "]" then
      depth = depth - 1
      if depth == 0 then return j end
    end
  end
  return nil
end

-- The still-escaped text of the JSON string that follows "key": in s, or nil.
local function string_field(s, key)
  local _, last = s:find('"' .. key .. '":"', 1, true)
  if last == nil then return nil end
  local j, escaped = last + 1, false
  while j <= #s do
    local c = s:sub(j, j)
    if escaped then escaped = false
    elseif c == "\\" then escaped = true
    elseif c == '"' then return s:sub(last + 1, j - 1) end
    j = j + 1
  end
  return nil
end

local function health_body(text, status)
  local start = text:find(DETAIL, 1, true)
  if start ~= nil then
    local stop = closing(text, start)
    if stop ~= nil then
      local rest = text:sub(start + #DETAIL, stop)
      if rest:sub(1, 1) == "," then rest = rest:sub(2) end
      return "{" .. rest
    end
  end
  local message = string_field(text, "message")
  if message == nil or message == "" then
    message = "the gateway did not answer (HTTP " .. status .. ")"
  end
  return '{"status":"unhealthy","checks":{"gateway":{"status":"unhealthy",'
      .. '"latency_ms":0,"message":"' .. message .. '"}},"version":""}'
end

function envoy_on_response(response_handle)
  local metadata = response_handle:streamInfo():dynamicMetadata():get(NS)
  if metadata == nil or not metadata["rest"] then return end
  local status = response_handle:headers():get(":status") or ""
  if status:sub(1, 1) ~= "5" then return end
  -- body() suspends the script until the body is in; every object taken before it (the
  -- headers above) is dead after it, so the headers are taken again.
  local body = response_handle:body(true)
  local text = body:getBytes(0, body:length())
  body:setBytes(health_body(text, status))
  local headers = response_handle:headers()
  headers:replace(":status", "503")
  headers:replace("content-type", "application/json")
end
"""
