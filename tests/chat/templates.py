"""Chat templates in the styles real models ship (test data for the renderer's tests)."""

# SmolLM2-Instruct (ChatML with a default system prompt), as in its GGUF metadata
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}")

# Llama-3 style: bos_token, whitespace-control tags, |trim, strftime_now, <|eot_id|>
LLAMA3 = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + strftime_now("%d %b %Y") + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# Qwen2.5 style: default system prompt, tools through tojson, plain {% %} tags on their own
# indented lines (so trim_blocks / lstrip_blocks decide the whitespace)
QWEN = """{% if tools %}
    {{ '<|im_start|>system\\n' }}
    {% if messages[0]['role'] == 'system' %}
        {{ messages[0]['content'] }}
    {% else %}
        {{ 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {% endif %}
    {{ "\\n\\n# Tools\\n\\n<tools>" }}
    {% for tool in tools %}
        {{ "\\n" }}{{ tool | tojson }}
    {% endfor %}
    {{ "\\n</tools><|im_end|>\\n" }}
{% else %}
    {% if messages[0]['role'] == 'system' %}
        {{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {% else %}
        {{ '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {% endif %}
{% endif %}
{% for message in messages %}
    {% if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {% elif message.role == "assistant" %}
        {{ '<|im_start|>' + message.role }}
        {% if message.content %}
            {{ '\\n' + message.content }}
        {% endif %}
        {% for tool_call in message.tool_calls %}
            {{ '\\n<tool_call>\\n{"name": "' + tool_call.function.name + '", "arguments": ' + tool_call.function.arguments | tojson + '}\\n</tool_call>' }}
        {% endfor %}
        {{ '<|im_end|>\\n' }}
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
    {{ '<|im_start|>assistant\\n' }}
{% endif %}
"""

# Mistral / Llama-2 style: refuses roles that do not alternate
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant "
    "roles are supported!') }}{% endif %}{% endfor %}")

# loop controls, namespaces, tojson of awkward characters, the generation tag
CONTROLS = """{% set ns = namespace(n=0) %}
{% for m in messages %}
  {% if m.role == 'system' %}{% continue %}{% endif %}
  {% set ns.n = ns.n + 1 %}
  {{ ns.n }}. {{ m.role }}: {{ m.content | tojson }}
  {% if m.role == 'assistant' %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endif %}
  {% if ns.n >= 4 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}<turn>{{ eos_token }}{% endif %}
"""

ALL = {"smollm2": SMOLLM2, "llama3": LLAMA3, "qwen": QWEN, "mistral": MISTRAL,
       "controls": CONTROLS}
