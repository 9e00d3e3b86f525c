"""Seed data of the sandbox: one customer with an account in every margin mode the spec documents
(full margin, isolated margin, cross-lever, spot, stock), and a few symbols of each, in the shapes
of the documented examples (amounts and prices as strings)."""

from __future__ import annotations

from typing import Any

COMPANY_ID = 439
CUSTOMER_ID = 2482
CUSTOMER_GROUP_ID = 12
CUSTOMER_NO = "86001308"
#: ``findCustomerInfo.accountList``: the schema says object, the examples show an array. ``map``
#: (the default, the schema): one member per account, keyed by its accountId; ``array``: the examples.
ACCOUNT_LIST_SHAPES = ("map", "array")

#: The isolated-margin market order of the documented Order Process (OA-FLOW), valid on this seed data.
ORDER_PROCESS_EXAMPLE: dict[str, Any] = {
    "accountCurrency": "CNY",
    "accountDigits": 2,
    "accountId": 1034124,
    "bizType": 1,
    "crossLevelNum": 1,
    "direction": 1,
    "entryType": 1,
    "expireType": 1,
    "requestNum": "0.100000",
    "requestPrice": "167655",
    "requestTime": 1698299972000,
    "symbolId": 8390,
    "tradeType": 2,
}


def customer_info(company_id: int, accounts: list[dict[str, Any]], account_list: str = "map") -> dict[str, Any]:
    """``findCustomerInfo``'s data: every field of the vendor's OpenAPI schema (53), with its type.

    ``accountList`` is an object, as the schema says (``{"<accountId>": account, ...}``), or an
    array as the examples show (``account_list="array"``).
    """
    registered = 1698299000000
    listed: Any = accounts if account_list == "array" else {str(a["accountId"]): a for a in accounts}
    return {
        "id": CUSTOMER_ID,
        "companyId": company_id,
        "customerGroupId": CUSTOMER_GROUP_ID,
        "customerNo": CUSTOMER_NO,
        "kycAuditStatus": 2,
        "kycAuditRemark": "",
        "kycStatus": 4,
        "kycRemark": "authenticated",
        "accountList": listed,
        "accountRemark": "",
        "loginPassStatus": "2",
        "payPassStatus": "2",
        "email": "sandbox@example.invalid",
        "phone": "",
        "phoneArea": "",
        "name": "Sandbox Customer",
        "country": "SANDBOX",
        "type": 1,
        "deposit": 1,
        "withdraw": 1,
        "optional": 0,
        "activateStatus": 1,
        "activateTime": registered,
        "companyKycStatus": 1,
        "status": 1,
        "thirdServerCode": "",
        "source": "System",
        "thirdLoginSource": "",
        "thirdUserId": "",
        "idCard": "",
        "idCardType": "",
        "thirdIntactMsg": "",
        "firstName": "Sandbox",
        "lastName": "Customer",
        "isFund": 0,
        "assertPassStatus": "2",
        "googleId": 0,
        "openAccountType": 0,
        "loginTime": registered,
        "createTime": registered,
        "relationCustomerId": 0,
        "companyType": "",
        "registerSource": 3,
        "associationCompanyId": 0,
        "registerTime": registered,
        "utmSource": "",
        "forceLevel": {},
        "earlyWarningLevel": {},
        "withdrawLevel": {},
        "postalCode": "",
        "customerAgentMark": "",
        "apiCheckSwitch": False,
        "apiCheckRule": "",
    }


def seed_accounts(company_id: int) -> list[dict[str, Any]]:
    def account(account_id: int, trade_type: int, currency: str, balance: str, margin: str) -> dict[str, Any]:
        equity = f"{float(balance):.2f}"
        free = f"{float(balance) - float(margin):.2f}"
        return {
            "accountId": account_id,
            "currency": currency,
            "digits": 2,
            "tradeType": trade_type,
            "customerNo": CUSTOMER_NO,
            "customerId": CUSTOMER_ID,
            "companyId": company_id,
            "balance": balance,
            "available": free,
            "equity": equity,
            "netAssets": equity,
            "margin": margin,
            "freeMargin": free,
            "marginRadio": "0",
            "frozen": "0",
            "profit": "0",
            "interest": "0",
            "liabilities": "0",
            "withdrawAmount": free,
            "status": 1,
            "activateStatus": 1,
            "openAccountStatus": 1,
            "type": 1,
        }

    return [
        account(1034123, 1, "USDT", "25000.00", "1200.50"),
        account(1034124, 2, "CNY", "100000.00", "59371.20"),
        account(1034125, 3, "USDT", "10000.00", "0.00"),
        account(1034126, 5, "USDT", "50000.00", "0.00"),
        account(1034127, 6, "USD", "80000.00", "0.00"),
    ]


_ALL_WEEK = [{"dayOfWeek": d, "startTime": 0, "endTime": 86399} for d in range(1, 8)]


def seed_symbols() -> list[dict[str, Any]]:
    def symbol(
        symbol_id: int, code: str, trade_type: int, digits: int, base: str, profit: str, in_trade: int
    ) -> dict[str, Any]:
        return {
            "symbolId": symbol_id,
            "symbolCode": code,
            "symbolName": code,
            "tradeType": trade_type,
            "symbolDigits": digits,
            "baseCurrency": base,
            "profitCurrency": profit,
            "customerGroupIds": None,
            "symbolGroupIds": None,
            "askSpread": "0",
            "bidSpread": "0",
            "pointRatio": 0,
            "dealMode": 4,
            "etf": False,
            "fundId": None,
            "labels": "sandbox",
            "sortNum": symbol_id % 1000,
            "enableShortLoan": 0,
            "enableLongLoan": 0,
            "dividend": 0,
            "inHolidayTime": 0,
            "inTradeTime": in_trade,
            "holidayTimeList": [],
            "tradeTimeList": _ALL_WEEK if in_trade else [],
        }

    return [
        symbol(8390, "EURAUD", 2, 5, "EUR", "AUD", 1),
        symbol(8391, "EURUSD", 2, 5, "EUR", "USD", 1),
        symbol(720, "BINAN_SOL_USDT", 1, 2, "SOL", "USDT", 1),
        symbol(1061, "BTC/USDT", 1, 2, "BTC", "USDT", 1),
        symbol(9001, "XAUUSD", 2, 2, "XAU", "USD", 0),
        symbol(1062, "ETH/USDT", 3, 2, "ETH", "USDT", 1),
        symbol(1063, "BTC/USDT-SPOT", 5, 2, "BTC", "USDT", 1),
        symbol(70001, "AAPL", 6, 2, "AAPL", "USD", 1),
    ]


#: Starting mid prices of the seed symbols (the sandbox moves them on every fill).
START_PRICES = {
    8390: 1.67094,
    8391: 1.08512,
    720: 22.25,
    1061: 64123.5,
    9001: 2351.4,
    1062: 3120.5,
    1063: 64100.0,
    70001: 189.25,
}
CONTRACT_SIZES = {8390: 100000, 8391: 100000, 720: 1, 1061: 1, 9001: 100, 1062: 1, 1063: 1, 70001: 1}
