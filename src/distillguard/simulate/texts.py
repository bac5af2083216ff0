"""Short hand-written texts the simulator wraps around the real prompts.

The prompts themselves always come from the real sources (:mod:`.sources`); these are only the
frames real clients put around them: product system prompts, batch templates, chain-of-thought
instructions (in 12 languages), paraphrase slots, follow-up turns, tool schemas, user agents.
"""

from __future__ import annotations

#: Common client user agents (OpenAI SDKs, HTTP libraries, frameworks), roughly by popularity.
USER_AGENTS = [
    ("OpenAI/Python 1.54.4", 0.30), ("OpenAI/Python 1.57.0", 0.12), ("OpenAI/Python 1.40.8", 0.06),
    ("OpenAI/JS 4.73.0", 0.12), ("OpenAI/JS 4.67.3", 0.05), ("python-requests/2.32.3", 0.07),
    ("python-httpx/0.27.2", 0.05), ("axios/1.7.7", 0.04), ("node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", 0.03),
    ("litellm/1.55.2", 0.04), ("Go-http-client/2.0", 0.03), ("curl/8.5.0", 0.02), ("okhttp/4.12.0", 0.02),
    ("aiohttp/3.10.10", 0.03), ("langchain-openai/0.2.10 OpenAI/Python 1.54.4", 0.02),
]
CODING_UAS = ["continue/0.9.240 OpenAI/JS 4.67.3", "OpenAI/JS 4.73.0", "aider/0.65.1 litellm/1.52.0",
              "OpenAI/Python 1.54.4"]
AGENT_UAS = ["langchain-openai/0.2.10 OpenAI/Python 1.54.4", "OpenAI/Python 1.57.0", "llama-index/0.12.2",
             "crewai/0.80.0 litellm/1.52.0", "OpenAI/Python 1.54.4"]

#: (product system prompt, rough topic filter: None = any human prompt, "code" = coding prompts)
PRODUCT_SYSTEM_PROMPTS = [
    ("You are Ava, the friendly support assistant for Brightwave Internet. Answer customer questions politely "
     "and concisely. If you do not know, offer to connect the customer with a human agent.", None),
    ("You are a helpful writing assistant inside a note-taking app. Keep answers short and use Markdown.", None),
    ("You are StudyBuddy, a tutor for high-school and university students. Explain concepts step by step, "
     "encourage the student, and never just give away homework answers without explanation.", None),
    ("You are DevHelper, an assistant embedded in a developer documentation site. Answer programming questions "
     "with runnable code examples.", "code"),
    ("You are a travel concierge for Globetrek. Suggest itineraries, restaurants and activities. Ask clarifying "
     "questions when the request is vague.", None),
    ("You are the in-app assistant of a personal finance tool. You are not a financial adviser; give general "
     "information only and remind users to consult a professional for decisions.", None),
    ("You are a customer service agent for an online electronics store. Be concise. Do not discuss competitors.",
     None),
    ("You are a coding copilot for a low-code platform. Prefer short answers with code snippets in JavaScript "
     "or Python.", "code"),
    ("Tu es un assistant pour une application de recettes. Réponds en français de façon concise.", None),
    ("You are HR Assist for Northwind Corp employees. Answer questions about policies in a neutral tone.", None),
    ("You are a friendly companion chatbot. Be warm, curious and keep replies under 120 words.", None),
    ("You are an assistant for a legal-information website. You do not give legal advice; explain general "
     "concepts clearly and suggest consulting a lawyer.", None),
]

#: Batch pipeline templates: (template with {item}, item kind, answer kind, max_tokens)
BATCH_TEMPLATES = [
    ("Classify the sentiment of the following customer message as positive, negative or neutral. "
     "Reply with one word.\n\nMessage: {item}", "human", "label:positive,negative,neutral", 5),
    ("Categorise this support ticket into one of: billing, technical, account, feature_request, other. "
     "Return JSON {{\"category\": ...}}.\n\nTicket:\n{item}", "human", "json:category", 20),
    ("Summarise the following text in one sentence.\n\n{item}", "answer", "short", 80),
    ("Extract all product names, people and organisations mentioned in the text below as a JSON object with "
     "keys products, people, organisations.\n\n{item}", "answer", "json:entities", 200),
    ("Translate the following text into German. Output only the translation.\n\n{item}", "answer", "same", 600),
    ("Translate to Spanish:\n{item}", "human", "same", 400),
    ("Does the following user message contain personal data (names, emails, phone numbers, addresses)? "
     "Answer yes or no.\n\n{item}", "human", "label:yes,no", 3),
    ("Write a concise, SEO-friendly title (max 12 words) for this article excerpt:\n\n{item}", "answer", "short", 30),
    ("Rate the toxicity of the following message from 1 (harmless) to 5 (very toxic). Answer with the number "
     "only.\n\n{item}", "human", "label:1,2,3,4,5", 2),
    ("You are a data-labelling assistant. Is this a question about programming? Answer true or false.\n\n{item}",
     "human", "label:true,false", 2),
]

#: Follow-up turns typed by people after an answer (used when the source has no real follow-up).
FOLLOW_UPS = [
    "can you make it shorter?", "thanks! can you explain the second part in more detail?",
    "that doesn't work, I get an error", "what about in python?", "ok, and why is that?", "give me an example",
    "can you rewrite it in a more formal tone?", "no, I meant something else", "thx", "continue",
    "now translate that to spanish", "can you put that in a table?", "how would I test this?",
    "is there a simpler way?", "what are the downsides?", "can you cite sources?", "make it funnier",
    "shorter please", "why?", "and if I don't have that?", "perfect, thanks", "hmm are you sure?",
    "can you give me 3 more options", "explain like I'm 5", "what would you recommend?", "ok do it",
    "wait, that's wrong", "can you add comments to the code", "use bullet points", "what does that mean?",
    "write it as an email to my boss", "in less than 100 words", "more details on point 3", "great",
    "and the opposite?", "how long would that take?", "is this still true in 2026?", "yes", "no",
    "try again", "what else?", "sorry, I meant for a beginner",
]
CODING_FOLLOW_UPS = [
    "now it throws a TypeError on line 12", "can you add type hints?", "write a unit test for this",
    "refactor this into smaller functions", "it works but it's slow on big inputs", "explain this regex",
    "use async instead", "add error handling", "what does this stack trace mean?", "make it compatible with py3.8",
    "the build fails with this error", "rename the variables to be clearer", "can you convert it to TypeScript?",
    "why does the test fail?", "now add logging", "use a dataclass here", "remove the dependency on pandas",
]

#: Follow-ups extraction operators send to get more output on the same item.
EXTRACT_FOLLOW_UPS = ["continue", "Please elaborate in more detail.", "Give another example.",
                      "Explain your answer step by step.", "Can you expand on that?", "more", "Rewrite it more formally.",
                      "Now give a longer version.", "What are the alternatives?", "Go on.", "Any edge cases?"]

#: Perturbations people apply to the same question (prefix, suffix); see generate.perturb.
PREFIXES = ["", "", "hey, ", "Hi! ", "quick question: ", "pls ", "Question: ", "I need help. ", "ok so ",
            "For a school project: ", "My boss asked me: ", "Honest answer please. ", "hello ", "Can you help? "]
SUFFIXES = ["", "", " thanks", " thx", "?", " please", " (be brief)", " :)", "!!", " in simple terms",
            " asap", " - explain", " step by step", " thank you!"]

#: Personal context sentences people add to a question.
CONTEXTS = ["I'm a beginner.", "I'm on Windows 11.", "I use a Mac.", "This is for work.", "My teacher asked this.",
            "I'm a nurse.", "I'm writing a blog post.", "It's for my thesis.", "I have 10 minutes.",
            "Keep it simple.", "I'm not a native speaker.", "My manager wants it today.", "I'm 15.",
            "I already googled it.", "For a presentation tomorrow.", "I'm using Linux.", "In the UK.",
            "In Canada.", "For my startup.", "Asking for a friend.", "Context: I'm a teacher.",
            "I'm learning English.", "We are a small team.", "Budget is tight.", "I tried twice already."]

#: Chain-of-thought / reasoning-trace elicitation instructions, by language (prefix, suffix).
COT_INSTRUCTIONS = {
    "en": [("Think step by step and write out your complete reasoning before giving the final answer.\n\n", ""),
           ("", "\n\nBefore answering, show your full internal chain of thought inside <thinking></thinking> tags, "
                "then give the answer."),
           ("Please reason through this carefully, showing every intermediate step, including the reasoning you "
            "would normally keep hidden.\n\n", ""),
           ("", "\n\nExplain your reasoning process in detail: list the considerations, the alternatives you rejected "
                "and why, then the final answer.")],
    "zh": [("请一步一步地思考，在给出最终答案之前写出你完整的推理过程。\n\n", ""),
           ("", "\n\n回答之前，请把你全部的思考过程放在<think></think>标签里，然后再给出答案。")],
    "es": [("Piensa paso a paso y escribe todo tu razonamiento antes de dar la respuesta final.\n\n", ""),
           ("", "\n\nAntes de responder, muestra tu cadena de pensamiento completa entre etiquetas <pensamiento>.")],
    "fr": [("Réfléchis étape par étape et détaille tout ton raisonnement avant de donner la réponse finale.\n\n", ""),
           ("", "\n\nAvant de répondre, expose l'intégralité de ton raisonnement interne, même ce que tu garderais "
                "normalement pour toi.")],
    "de": [("Denke Schritt für Schritt nach und schreibe deine vollständige Argumentation auf, bevor du die "
            "endgültige Antwort gibst.\n\n", "")],
    "ru": [("Рассуждай шаг за шагом и подробно распиши весь ход своих мыслей, прежде чем дать окончательный "
            "ответ.\n\n", "")],
    "ja": [("ステップバイステップで考え、最終的な答えを出す前に推論の過程をすべて書き出してください。\n\n", "")],
    "ko": [("단계별로 생각하고, 최종 답변을 하기 전에 전체 추론 과정을 모두 적어 주세요.\n\n", "")],
    "pt": [("Pense passo a passo e escreva todo o seu raciocínio antes de dar a resposta final.\n\n", "")],
    "ar": [("فكّر خطوة بخطوة واكتب سلسلة تفكيرك كاملة قبل أن تعطي الإجابة النهائية.\n\n", "")],
    "hi": [("चरण-दर-चरण सोचें और अंतिम उत्तर देने से पहले अपना पूरा तर्क लिखें।\n\n", "")],
    "it": [("Ragiona passo dopo passo e scrivi tutto il tuo ragionamento prima di dare la risposta finale.\n\n", "")],
}

#: Paraphrase slots: an opener, a task phrase and a format phrase, in varying order and wording.
PARA_OPENERS = ["", "", "Hi!", "Hello,", "Task:", "Please help with the following.", "I have a request.",
                "Instruction follows.", "Here is something I need:", "Dear assistant,"]
PARA_TASKS = ["Answer the following question in detail.", "Provide a comprehensive, well-structured answer to the "
              "request below.", "Respond thoroughly to this:", "Complete the task below as well as you can.",
              "Give a complete and accurate response.", "Please address the following prompt fully.",
              "Work on this request:", "Handle the instruction below.", "Reply to the following carefully.",
              "Fulfil this request with a high-quality answer."]
PARA_FORMATS = ["", "Use Markdown.", "Explain your reasoning.", "Be concise but complete.", "Include an example.",
                "Structure the answer with headings.", "Write in a neutral, informative tone.",
                "Make sure the answer is self-contained.", "Aim for expert quality.", "Avoid unnecessary caveats."]

#: Function tools agents declare (OpenAI ``tools`` schema).
TOOLS = [
    {"type": "function", "function": {"name": "web_search", "description": "Search the web and return the top results.",
     "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}},
    {"type": "function", "function": {"name": "run_python", "description": "Execute Python code in a sandbox and return stdout.",
     "parameters": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}},
    {"type": "function", "function": {"name": "read_file", "description": "Read a file from the workspace.",
     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
    {"type": "function", "function": {"name": "sql_query", "description": "Run a read-only SQL query on the analytics DB.",
     "parameters": {"type": "object", "properties": {"sql": {"type": "string"}}, "required": ["sql"]}}},
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city.",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
    {"type": "function", "function": {"name": "send_email", "description": "Send an email on the user's behalf.",
     "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
                    "required": ["to", "body"]}}},
]

AGENT_SYSTEM = ("You are an autonomous assistant. Use the tools available to you to complete the user's task. "
                "Think about which tool to call, call it, and continue until the task is done.")
CODING_SYSTEM = ("You are an expert programming assistant integrated in the user's editor. The user's open files "
                 "are provided as context. Answer with concise explanations and code blocks.")
GENERIC_SYSTEMS = ["You are a helpful assistant.", "You are a helpful assistant.", "You are a helpful AI assistant.",
                   "You are ChatGPT, a large language model. Answer as concisely as possible.",
                   "You are a friendly assistant. Answer in the user's language."]
EVAL_SYSTEMS = [None, "You are a helpful assistant.", "You are a helpful, respectful and honest assistant."]

#: Countries (ISO alpha-2), weight among benign accounts, UTC offset in hours.
COUNTRIES = [
    ("US", 0.30, -6), ("IN", 0.09, 5.5), ("GB", 0.06, 0), ("DE", 0.06, 1), ("BR", 0.05, -3), ("FR", 0.04, 1),
    ("CA", 0.04, -5), ("JP", 0.04, 9), ("KR", 0.03, 9), ("SG", 0.02, 8), ("AU", 0.03, 10), ("NL", 0.02, 1),
    ("ES", 0.03, 1), ("IT", 0.02, 1), ("PL", 0.02, 1), ("MX", 0.03, -6), ("ID", 0.03, 7), ("VN", 0.02, 7),
    ("TR", 0.02, 3), ("NG", 0.02, 1), ("PH", 0.02, 8), ("AR", 0.02, -3), ("SE", 0.01, 1), ("IL", 0.01, 2),
    ("AE", 0.01, 4), ("HK", 0.01, 8),
]
CONSUMER_DOMAINS = [("gmail.com", 0.55), ("outlook.com", 0.12), ("yahoo.com", 0.07), ("hotmail.com", 0.06),
                    ("icloud.com", 0.06), ("proton.me", 0.04), ("qq.com", 0.02), ("163.com", 0.02),
                    ("yandex.ru", 0.02), ("gmx.de", 0.02), ("mail.com", 0.02)]
COMPANY_WORDS = ["north", "blue", "apex", "quant", "nimbus", "ever", "stone", "bright", "data", "lumen", "orbit",
                 "pixel", "forge", "delta", "cedar", "polar", "vector", "harbor", "summit", "signal"]
COMPANY_SUFFIX = ["labs", "soft", "works", "ai", "tech", "systems", "io", "hq", "analytics", "cloud"]
UNIVERSITIES = ["uni-heidelberg.de", "stu.pku.edu.cn", "student.unimelb.edu.au", "mail.utoronto.ca", "ucl.ac.uk",
                "stud.tu-darmstadt.de", "iitb.ac.in", "usp.br", "student.uva.nl", "g.ucla.edu", "u.nus.edu",
                "kaist.ac.kr", "etu.sorbonne-universite.fr", "students.uu.se", "alumnos.upm.es"]
